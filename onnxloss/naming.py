"""Deterministic, collision-free names for everything onnxloss adds to a model."""

from __future__ import annotations

import re
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^0-9A-Za-z_./:-]+")


class NameAllocator:
    """Hands out names that clash with nothing in the model nor with each other.

    A name is the hint itself when free, else the hint with the next free ``_<k>`` suffix
    (counting on from the last one given for that hint), so the same sequence of requests
    always yields the same names.
    """

    def __init__(self, taken: Iterable[str]):
        self._taken = set(taken)
        self._next: dict[str, int] = {}  # next suffix to try per hint: no quadratic probing

    def __contains__(self, name: str) -> bool:
        return name in self._taken

    def reserve(self, name: str) -> None:
        """Mark a name chosen by the user (e.g. the loss output) as used."""
        self._taken.add(name)

    def fresh(self, hint: str) -> str:
        base = _UNSAFE.sub("_", hint) or "t"
        name, k = base, self._next.get(base, 0)
        if k:
            name = f"{base}_{k}"
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._next[base] = k + 1
        self._taken.add(name)
        return name
