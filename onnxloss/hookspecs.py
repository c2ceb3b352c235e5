"""The hooks a plugin implements. Each docstring is the hook's reference documentation.

A plugin is a module (or any object) with functions decorated by :data:`onnxloss.hookimpl`
and named after the hooks below. A distribution exposes it with an entry point in the
``onnxloss`` group::

    [project.entry-points.onnxloss]
    focal = "onnxloss_focal.plugin"

The built-in losses and regularizers are plugins registered through the same path.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

PROJECT = "onnxloss"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def onnxloss_register_losses(register: Callable[..., None]) -> None:
    """Register loss terms.

    Call ``register(cls)`` once per :class:`onnxloss.Loss` subclass. ``cls.name`` is the
    name users pass as ``score_name`` / on the command line, ``cls.aliases`` any other
    accepted names. A name another plugin registered first is refused and reported with
    both plugins' names; the plugin's other names still register.

    The hook is called once, when onnxloss first needs its registry. Registrations are
    kept only if the hook returns normally: a hook that raises is reported by plugin name
    and distribution, and none of its registrations are kept.
    """


@hookspec
def onnxloss_register_regularizers(register: Callable[..., None]) -> None:
    """Register regularizer (penalty) terms.

    Call ``register(cls)`` once per :class:`onnxloss.Regularizer` subclass; names and
    aliases live in a namespace separate from the losses' (``"l1"`` may be both a loss and
    a penalty). The same rules as :func:`onnxloss_register_losses` apply.
    """


@hookspec
def onnxloss_register_gradients(register: Callable[..., None]) -> None:
    """Register vector-Jacobian rules, the gradients of operators, for :mod:`onnxloss.autodiff`.

    Call ``register(op_type, rule, domain="", non_differentiable=(), check=None)`` once per
    operator. ``rule(g, node, grads)`` receives the :class:`onnxloss.GraphBuilder` ``g``
    (constants take the node's float type), the node as an
    :class:`onnxloss.autodiff.GradientNode` (its inputs and outputs as graph values, its
    attributes with their schema defaults, which inputs need a gradient) and ``grads``, the
    gradient of the loss with respect to each output (``None`` for an output no gradient
    reaches). It returns, for each input in order, the gradient with respect to it (the
    input's shape, summed back over broadcast axes) or ``None`` where none is needed or
    the gradient is zero.

    ``domain`` is the operator's domain (``""`` for ai.onnx). ``non_differentiable`` lists
    the positions of float inputs the rule treats as constants (such as a clipping bound):
    no gradient flows through them, so a weight reaching the loss only that way is reported
    as unreachable. ``check(node)``, if given, returns ``""`` when the rule handles that node
    and else the reason it does not; the readiness check reports it before any graph is
    built.

    A rule for a ``(domain, op_type)`` another plugin registered first is refused and
    reported with both plugins' names; the plugin's other rules still register. As for the
    other hooks, registrations are kept only if the hook returns normally.
    """
