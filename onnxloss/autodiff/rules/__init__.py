"""The built-in gradient rules, one plugin module per operator family.

Each module fills a :class:`RuleTable` with small functions ``rule(g, node, grads)`` (see
:func:`onnxloss.hookspecs.onnxloss_register_gradients`) and registers them through the
``onnxloss_register_gradients`` hook, exactly as a third-party plugin would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class _Entry:
    op_type: str
    rule: Callable
    non_differentiable: tuple[int, ...]
    check: Callable | None


class RuleTable:
    """The rules of one plugin module, declared with :meth:`define` and handed to the
    hook's ``register`` callback by :meth:`register_all`."""

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def define(
        self,
        *op_types: str,
        non_differentiable: Iterable[int] = (),
        check: Callable | None = None,
    ) -> Callable[[Callable], Callable]:
        """Decorator: the function is the rule of every ``op_type`` given."""

        def decorate(rule: Callable) -> Callable:
            for op_type in op_types:
                self._entries.append(_Entry(op_type, rule, tuple(non_differentiable), check))
            return rule

        return decorate

    def register_all(self, register: Callable[..., None]) -> None:
        for e in self._entries:
            register(e.op_type, e.rule, non_differentiable=e.non_differentiable, check=e.check)

    @property
    def op_types(self) -> list[str]:
        return [e.op_type for e in self._entries]
