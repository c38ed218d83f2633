"""The memory graph: nodes (memories, topics, entities) joined by typed edges.

Edges are directed (``source -> target``) and typed:

- ``mentions``      memory -> entity it names
- ``about``         memory -> topic it belongs to
- ``follows``       memory -> the memory just before it in a conversation
- ``derived_from``  fact or summary -> the turn(s) it was extracted from
- ``supersedes``    newer fact -> the fact it replaced

``MemoryGraph`` is an immutable value: ``with_nodes``/``with_edges`` return a new graph. Its
``neighbourhood`` is the breadth-first expansion used by ranking (graph expansion around hits).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias

import msgspec

from domain.errors import InvalidRequest

__all__ = [
    "EDGE_KINDS",
    "NODE_KINDS",
    "Direction",
    "Edge",
    "EdgeKind",
    "MemoryGraph",
    "Node",
    "NodeKind",
]

NodeKind: TypeAlias = Literal["memory", "topic", "entity"]
EdgeKind: TypeAlias = Literal["mentions", "about", "follows", "derived_from", "supersedes"]
Direction: TypeAlias = Literal["out", "in", "both"]

NODE_KINDS: frozenset[str] = frozenset({"memory", "topic", "entity"})
EDGE_KINDS: frozenset[str] = frozenset({"mentions", "about", "follows", "derived_from", "supersedes"})


class Node(msgspec.Struct, frozen=True):
    id: str
    kind: NodeKind
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidRequest.single("node.id", "must be a non-empty string")
        if self.kind not in NODE_KINDS:
            raise InvalidRequest.single("node.kind", f"one of {sorted(NODE_KINDS)}")


class Edge(msgspec.Struct, frozen=True):
    source: str
    target: str
    kind: EdgeKind
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.source or not self.target:
            raise InvalidRequest.single("edge", "source and target must be non-empty")
        if self.kind not in EDGE_KINDS:
            raise InvalidRequest.single("edge.kind", f"one of {sorted(EDGE_KINDS)}")
        if not 0.0 < self.weight <= 1.0:
            raise InvalidRequest.single("edge.weight", "must be in (0, 1]")


class MemoryGraph:
    """An immutable in-memory graph. Edges may only join nodes the graph holds; adding an edge that
    is already present (same source, target, kind) keeps the first one."""

    __slots__ = ("_edges", "_in", "_nodes", "_out")

    def __init__(self, nodes: Iterable[Node] = (), edges: Iterable[Edge] = ()) -> None:
        self._nodes: dict[str, Node] = {}
        for node in nodes:
            known = self._nodes.get(node.id)
            if known is not None and known.kind != node.kind:
                raise InvalidRequest.single("node.kind", f"{node.id!r} is already a {known.kind}")
            self._nodes[node.id] = node
        self._edges: dict[tuple[str, str, str], Edge] = {}
        self._out: dict[str, list[Edge]] = {}
        self._in: dict[str, list[Edge]] = {}
        for edge in edges:
            for end in (edge.source, edge.target):
                if end not in self._nodes:
                    raise InvalidRequest.single("edge", f"unknown node {end!r}")
            key = (edge.source, edge.target, edge.kind)
            if key in self._edges:
                continue
            self._edges[key] = edge
            self._out.setdefault(edge.source, []).append(edge)
            self._in.setdefault(edge.target, []).append(edge)

    @property
    def nodes(self) -> Mapping[str, Node]:
        return dict(self._nodes)

    @property
    def edges(self) -> tuple[Edge, ...]:
        return tuple(self._edges.values())

    def node(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def with_nodes(self, *nodes: Node) -> MemoryGraph:
        return MemoryGraph((*self._nodes.values(), *nodes), self._edges.values())

    def with_edges(self, *edges: Edge) -> MemoryGraph:
        return MemoryGraph(self._nodes.values(), (*self._edges.values(), *edges))

    def edges_of(self, node_id: str, kinds: Iterable[str] | None = None, direction: Direction = "both") -> tuple[Edge, ...]:
        wanted = None if kinds is None else frozenset(kinds)
        found: list[Edge] = []
        if direction in ("out", "both"):
            found += self._out.get(node_id, ())
        if direction in ("in", "both"):
            found += self._in.get(node_id, ())
        return tuple(e for e in found if wanted is None or e.kind in wanted)

    def neighbourhood(
        self,
        node_id: str,
        depth: int,
        kinds: Iterable[str] | None = None,
        direction: Direction = "both",
    ) -> dict[str, int]:
        """Every node within ``depth`` hops of ``node_id`` over edges of ``kinds`` (all kinds when
        None), mapped to its hop distance (the start node is at 0). Unknown nodes have an empty
        neighbourhood. Deterministic: the result does not depend on insertion order."""
        if depth < 0:
            raise InvalidRequest.single("depth", "must be >= 0")
        if node_id not in self._nodes:
            return {}
        wanted = None if kinds is None else frozenset(kinds)
        if wanted is not None and (unknown := wanted - EDGE_KINDS):
            raise InvalidRequest.single("kinds", f"unknown edge kinds {sorted(unknown)}")
        distance = {node_id: 0}
        queue = deque([node_id])
        while queue:
            current = queue.popleft()
            hops = distance[current]
            if hops == depth:
                continue
            for edge in self.edges_of(current, wanted, direction):
                other = edge.target if edge.source == current else edge.source
                if other not in distance:
                    distance[other] = hops + 1
                    queue.append(other)
        return distance
