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
