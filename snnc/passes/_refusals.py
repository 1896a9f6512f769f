"""Refusals as a reader wants them: grouped by reason, one line per offending node (pass helper, not
a pass; any pass or target that lists what it cannot handle uses it: the Loihi target and its passes).

A problem is written ``"<op> %<node>[ (<detail>)]: <reason>; <fix>"`` (what the Loihi target's
``structure_problems``, ``lower.legality`` and ``neuron_features.unsupported_features`` produce).  :func:`format_refusals`
groups the problems whose reason and fix are the same, states each reason and its fix once, then lists
the nodes under it, one a line, with the node's place in the user's model when the graph knows it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from snnc.ir import Graph
from snnc.ir import ops as O

_MAX_NODES = 12  # nodes listed per reason; the rest are counted


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """One problem split into its parts: ``where`` (``neuron %n``, with any node-specific detail),
    ``reason`` and ``fix`` (empty when the problem names none)."""

    where: str
    reason: str
    fix: str

    @classmethod
    def parse(cls, problem: str) -> Refusal:
        where, sep, rest = problem.partition(": ")
        if not sep or "%" not in where:  # a graph-level problem: no node to group by
            where, rest = "", problem
        reason, sep, fix = rest.rpartition("; ")
        if not sep:
            reason, fix = rest, ""
        return cls(where=where, reason=reason, fix=fix)


def format_refusals(head: str, problems: Sequence[str], graph: Graph | None = None) -> str:
    """``head: N problems in M nodes, K reasons:`` then, per reason, ``  [k/K] <reason>; <fix> (n nodes):``
    (no ``[k/K]`` for one reason) and its nodes, one a line (at most ``_MAX_NODES``, then ``... and n
    more``).  Joined into one line (``snnc.cli``: a line ending in ``:`` joins with a space, others with
    ``; ``) it reads ``head: [1/2] reason; fix (2 nodes): neuron %a; neuron %b; [2/2] reason; ...``."""
    refusals = [Refusal.parse(p) for p in problems]
    groups: dict[tuple[str, str], list[str]] = {}
    for r in refusals:
        groups.setdefault((r.reason, r.fix), []).append(r.where)
    nodes = {_node(r.where) for r in refusals if r.where}
    lines = [f"{head}: {len(problems)} problem{_s(len(problems))} in {len(nodes)} node{_s(len(nodes))}, "
             f"{len(groups)} reason{_s(len(groups))}:"]
    for k, ((reason, fix), wheres) in enumerate(groups.items(), 1):
        named = [w for w in wheres if w]
        count = f" ({len(named)} node{_s(len(named))})" if named else ""
        # numbered when there are several: the CLI's one-line form joins every line with "; ", and the
        # number is what shows where the next reason starts among the node names
        number = f"[{k}/{len(groups)}] " if len(groups) > 1 else ""
        lines.append(f"  {number}{reason}{'; ' + fix if fix else ''}{count}" + (":" if named else ""))
        for w in named[:_MAX_NODES]:
            lines.append(f"    {w}{_place(graph, w)}")
        if len(named) > _MAX_NODES:
            lines.append(f"    ... and {len(named) - _MAX_NODES} more")
    return "\n".join(lines)


def _node(where: str) -> str:
    """The node name in ``where`` (``neuron %n2 (max_spikes=3)`` -> ``n2``)."""
    m = re.search(r"%([^\s(),:;]+)", where)
    return m.group(1) if m else where


def _place(graph: Graph | None, where: str) -> str:
    """`` at <source line>`` for the node ``where`` names, when the graph records one."""
    if graph is None or "%" not in where:
        return ""
    name = _node(where)
    node = next((n for n in graph.nodes if n.name == name), None)
    return f" at {node.loc}" if node is not None and node.loc else ""


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def product_refusal(graph: Graph, reason: str) -> list[str]:
    """One problem naming every ``mul`` node (an elementwise product of two values: SEW-ResNet's AND /
    IAND connect), for a target whose ``import_legality`` refuses it: no pass removes a product, so it
    is refused right after import.  ``[]`` when the graph has none."""
    names = [n.name for n in graph.nodes if isinstance(n.op, O.Mul)]
    if not names:
        return []
    listed = ", ".join("%" + n for n in names[:_MAX_NODES]) + (f" and {len(names) - _MAX_NODES} more"
                                                               if len(names) > _MAX_NODES else "")
    return [f"mul {listed}: {reason}; build the SEW-ResNet with cnf='ADD' (a sum of spikes, which every target "
            "maps) or run it on the torch target"]
