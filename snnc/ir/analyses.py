"""Results that one pass leaves on a graph for later passes and targets, keyed by their type.

A pass that computes something another needs (calibration statistics, op counts, the direct-coded
teacher, a core mapping) stores one typed object; a reader asks for that type and gets that type
back, or None.  There is no string key to misspell and no untyped dict to guess the shape of.
The results are not part of the textual IR or of graph equality; ``Graph.copy`` copies them.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

T = TypeVar("T")


class Analyses:
    """At most one result per type."""

    def __init__(self) -> None:
        self._by_type: dict[type, Any] = {}

    def put(self, result: object) -> None:
        """Store ``result`` (replacing an earlier result of the same type)."""
        self._by_type[type(result)] = result

    def get(self, kind: type[T]) -> T | None:
        return self._by_type.get(kind)

    def __contains__(self, kind: type) -> bool:
        return kind in self._by_type

    def __deepcopy__(self, memo: dict[int, Any]) -> Analyses:
        out = Analyses()
        out._by_type = copy.deepcopy(self._by_type, memo)
        return out

    def __repr__(self) -> str:
        return f"Analyses({', '.join(sorted(k.__name__ for k in self._by_type))})"
