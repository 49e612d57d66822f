"""Column lineage, the plan walk: what each plan node's output attributes derive from.

``_Extractor`` walks an analyzed plan bottom up (iteratively), one rule per plan node
class, and gives each node its output attribute ids, their dependencies and the leaf
attributes that decide which rows it returns. Its expressions are resolved by
``column_exprs._ExprWalk``, its base. ``Limits`` bounds one extraction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from definity_spark.lineage.column_exprs import (
    _NONE,
    EMPTY,
    Deps,
    _all,
    _ExprWalk,
    _flatten,
    _Scope,
    _trees,
    _union,
)
from definity_spark.lineage.commands import COMMANDS
from definity_spark.lineage.facts import QueryFacts
from definity_spark.lineage.plan import (
    RELATION_LEAVES,
    PlanNode,
    attr_ids,
    build,
    expr_id,
    is_tree,
)


@dataclass(frozen=True)
class Limits:
    """When to stop: ``max_deps`` (direct + indirect) listed per column, a time budget."""

    max_deps: int = 1000
    budget_ms: float = 100.0


# Nodes that return their child's rows and attributes unchanged (their expressions, if
# any, decide neither values nor which rows: hints, repartitioning, aliases, views).
_PASS_THROUGH = frozenset({
    "SubqueryAlias", "View", "ResolvedHint", "Repartition", "RepartitionByExpression",
    "RebalancePartitions", "GlobalLimit", "LocalLimit", "Limit", "Offset", "Tail",
    "Sample", "CTERelationDef", "UnresolvedHint", "EventTimeWatermark", "Subquery",
    "ReturnAnswer", "CollectMetrics",
})
# Between a LIMIT and a Sort, these keep the Sort deciding which rows the LIMIT keeps.
_KEEPS_LIMIT_ORDER = frozenset({
    "Project", "SubqueryAlias", "View", "ResolvedHint", "Filter", "GlobalLimit",
    "LocalLimit", "Limit", "Offset", "Sort",
})
_LIMITS = frozenset({"GlobalLimit", "LocalLimit", "Limit", "Tail", "Offset"})
_LEFT_ONLY_JOINS = ("LeftSemi", "LeftAnti", "ExistenceJoin")
_SET_OPS = frozenset({"Intersect", "Except"})
_WRITE_ROOT_SUFFIXES = ("Command",)
# the write commands (lineage/commands.py) and the parser's own write nodes
_WRITE_WRAPPERS = frozenset(COMMANDS) | {"InsertIntoDir", "InsertIntoStatement"}


class _Extractor(_ExprWalk):
    def __init__(self, facts: QueryFacts, sources: dict[int, list[tuple[str, str]]],
                 limits: Limits) -> None:
        self.facts = facts
        self.sources = sources
        self.limits = limits
        self.deadline = time.perf_counter() + limits.budget_ms / 1000.0
        self.ticks = 0
        self.names: dict[int, str] = {}
        self.anywhere: dict[int, Deps] = {}  # last resort: an id resolved by any node
        self.cte_defs: dict[Any, PlanNode] = {}
        self.cte_results: dict[Any, tuple[list[int], list[dict[int, Deps]], frozenset]] = {}
        self.unknown: set[str] = set()

    def plan(self, root: PlanNode, outer: _Scope | None
             ) -> tuple[list[int], list[dict[int, Deps]], frozenset]:
        """(output ids, output deps as a chain of maps, leaf attributes deciding rows)."""
        for node in root.walk():
            if node.name == "CTERelationDef":
                self.cte_defs.setdefault(node.fields.get("id"), node)
        sorts_that_matter = _sorts_under_limit(root)
        results: dict[int, tuple[list[int], list[dict[int, Deps]], frozenset]] = {}
        stack: list[tuple[PlanNode, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            if not done:
                stack.append((node, True))
                if node.name == "WithCTE":
                    # only the query child: a definition is read where it is referenced
                    kids = [c for c in node.children if c.name != "CTERelationDef"]
                else:
                    kids = node.children
                for child in kids:
                    stack.append((child, False))
                continue
            self.tick()
            results[id(node)] = self._plan_node(node, results, outer,
                                                id(node) in sorts_that_matter)
        return results[id(root)]

    def _plan_node(self, node: PlanNode, results: dict[int, Any], outer: _Scope | None,
                   sort_matters: bool
                   ) -> tuple[list[int], list[dict[int, Deps]], frozenset]:
        f = node.fields
        name = node.name
        kids = [results[id(c)] for c in node.children if id(c) in results]
        child_maps: list[dict[int, Deps]] = []
        for k in kids:
            child_maps.extend(k[1])
        scope = _Scope(child_maps, outer)
        rows: frozenset = _NONE
        for k in kids:
            rows = _union(rows, k[2])

        if not node.children and name in RELATION_LEAVES:
            if name == "CTERelationRef":
                return self._cte_ref(node, outer)
            ids = _leaf_output(node)
            for key in ("output", "dataCols", "partitionCols"):
                self._names_of(f.get(key))
            m: dict[int, Deps] = {}
            for eid in ids:
                m[eid] = (frozenset((eid,)), _NONE) if eid in self.sources else EMPTY
            return ids, [m], _NONE
        if name == "WithCTE":
            query = [c for c in node.children if c.name != "CTERelationDef"]
            return results[id(query[-1])] if query else ([], [], _NONE)
        if name in ("Project", "Aggregate"):
            key = "projectList" if name == "Project" else "aggregateExpressions"
            ids, m = self._named(f.get(key), scope)
            if name == "Aggregate":
                rows = _union(rows, _all(self.exprs(f.get("groupingExpressions"), scope)))
            return ids, [m], rows
        if name == "Window":
            ids, m = self._named(f.get("windowExpressions"), scope)
            base = kids[0] if kids else ([], [], _NONE)
            return base[0] + ids, [m] + base[1], rows
        if name == "Filter":
            rows = _union(rows, _all(self.exprs(f.get("condition"), scope)))
            return kids[0][0], kids[0][1], rows
        if name == "Sort":
            if sort_matters:
                rows = _union(rows, _all(self.exprs(f.get("order"), scope)))
            return kids[0][0], kids[0][1], rows
        if name in ("Distinct",):
            for eid in kids[0][0]:
                rows = _union(rows, _all(self._lookup(eid, kids[0][1])))
            return kids[0][0], kids[0][1], rows
        if name in ("Deduplicate", "DeduplicateWithinWatermark"):
            rows = _union(rows, _all(self.exprs(f.get("keys"), scope)))
            return kids[0][0], kids[0][1], rows
        if name == "Join" or name == "AsOfJoin":
            rows = _union(rows, _all(self.exprs(f.get("condition"), scope)))
            if any(k in str(f.get("joinType")) for k in _LEFT_ONLY_JOINS):
                return kids[0][0], kids[0][1], rows
            return kids[0][0] + kids[1][0], kids[0][1] + kids[1][1], rows
        if name == "LateralJoin":
            # right: a LateralSubquery expression whose plan sees the left side's columns
            right = f.get("right")
            ids = list(kids[0][0])
            maps = list(kids[0][1])
            for tree in _trees(right):
                plan = tree[0].get("plan")
                if is_tree(plan):
                    r_ids, r_maps, r_rows = self.plan(build(plan), scope)
                    ids += r_ids
                    maps += r_maps
                    rows = _union(rows, r_rows)
            rows = _union(rows, _all(self.exprs(f.get("condition"), scope)))
            return ids, maps, rows
        if name == "Union":
            return self._union_node(kids, rows)
        if name in _SET_OPS:
            for k in kids:
                for eid in k[0]:
                    rows = _union(rows, _all(self._lookup(eid, k[1])))
            return kids[0][0], kids[0][1], rows
        if name == "Expand":
            out = attr_ids(f.get("output"))
            merged: list[Deps] = [EMPTY] * len(out)
            for projection in f.get("projections") or ():
                trees = list(_trees(projection))
                for pos, tree in enumerate(trees[:len(out)]):
                    d = self.expr(tree, scope)
                    merged[pos] = (_union(merged[pos][0], d[0]), _union(merged[pos][1], d[1]))
            m = dict(zip(out, merged))
            self._names_of(f.get("output"))
            return out, [m], rows
        if name == "Generate":
            gen = self.exprs(f.get("generator"), scope)
            rows = _union(rows, _all(gen))  # explode decides how many rows each becomes
            out = attr_ids(f.get("generatorOutput"))
            self._names_of(f.get("generatorOutput"))
            base_ids = list(kids[0][0]) if kids else []
            unrequired = f.get("unrequiredChildIndex")
            if isinstance(unrequired, list) and unrequired and \
                    all(isinstance(i, int) for i in unrequired):
                base_ids = [x for i, x in enumerate(base_ids) if i not in set(unrequired)]
            return base_ids + out, [dict.fromkeys(out, gen)] + (kids[0][1] if kids else []), \
                rows
        if name == "MergeRows":
            return self._merge_rows(node, scope, rows)
        if name in _PASS_THROUGH and len(kids) == 1:
            return kids[0]
        if name.endswith(_WRITE_ROOT_SUFFIXES) or name in _WRITE_WRAPPERS:
            return kids[0] if kids else ([], [], _NONE)
        # A node no rule knows: its own output if it says, else its children's; what its
        # expressions read is taken as deciding its rows (listed rather than lost).
        self.unknown.add(name)
        for key, value in f.items():
            if key not in ("class", "num-children", "output") and \
                    not isinstance(value, (int, str, bool)):
                rows = _union(rows, _all(self.exprs(value, scope)))
        if isinstance(f.get("output"), list):
            out = attr_ids(f.get("output"))
            self._names_of(f.get("output"))
            return out, [{eid: self.resolve(eid, scope) for eid in out}], rows
        ids = []
        maps = []
        for k in kids:
            ids += k[0]
            maps += k[1]
        return ids, maps, rows

    def _named(self, value: Any, scope: _Scope) -> tuple[list[int], dict[int, Deps]]:
        """A Project's / Aggregate's list: each item's own id and what it derives from."""
        ids: list[int] = []
        m: dict[int, Deps] = {}
        for tree in _trees(value):
            eid = expr_id(tree[0])
            if eid is None:
                continue
            d = self.expr(tree, scope)
            ids.append(eid)
            m[eid] = d
            name = tree[0].get("name")
            if isinstance(name, str):
                self.names[eid] = name
        return ids, m

    def _names_of(self, value: Any) -> None:
        for tree in _trees(value):
            eid = expr_id(tree[0])
            if eid is not None and isinstance(tree[0].get("name"), str):
                self.names[eid] = tree[0]["name"]

    def _union_node(self, kids: list[Any], rows: frozenset
                    ) -> tuple[list[int], list[dict[int, Deps]], frozenset]:
        if not kids:
            return [], [], rows
        ids = kids[0][0]
        merged: list[Deps] = []
        for pos in range(len(ids)):
            direct: frozenset = _NONE
            indirect: frozenset = _NONE
            for k in kids:
                if pos < len(k[0]):
                    d = self._lookup(k[0][pos], k[1])
                    direct = _union(direct, d[0])
                    indirect = _union(indirect, d[1])
            merged.append((direct, indirect))
        return list(ids), [dict(zip(ids, merged))], rows

    def _cte_ref(self, node: PlanNode, outer: _Scope | None
                 ) -> tuple[list[int], list[dict[int, Deps]], frozenset]:
        cte_id = node.fields.get("cteId")
        ids = attr_ids(node.fields.get("output"))
        self._names_of(node.fields.get("output"))
        if cte_id not in self.cte_results:
            definition = self.cte_defs.get(cte_id)
            if definition is None:
                return ids, [dict.fromkeys(ids, EMPTY)], _NONE
            self.cte_results[cte_id] = ([], [], _NONE)  # a recursive reference: nothing
            self.cte_results[cte_id] = self.plan(definition, outer)
        d_ids, d_maps, d_rows = self.cte_results[cte_id]
        m = {eid: self._lookup(d_ids[pos], d_maps) if pos < len(d_ids) else EMPTY
             for pos, eid in enumerate(ids)}
        return ids, [m], d_rows

    def _merge_rows(self, node: PlanNode, scope: _Scope, rows: frozenset
                    ) -> tuple[list[int], list[dict[int, Deps]], frozenset]:
        """A row-level MERGE as the analyzer rewrites it (Spark 3.5+/Iceberg): output i is
        any instruction's output i; the instructions' conditions decide the rows."""
        f = node.fields
        out = attr_ids(f.get("output"))
        self._names_of(f.get("output"))
        merged: list[Deps] = [EMPTY] * len(out)
        for key in ("matchedInstructions", "notMatchedInstructions",
                    "notMatchedBySourceInstructions"):
            for tree in _trees(f.get(key)):
                instruction = build(tree)
                kids = instruction.children
                if kids:
                    rows = _union(rows, _all(self.expr(_flatten(kids[0]), scope)))
                # Keep(condition, output...); Split(condition, output..., otherOutput...)
                values = kids[1:]
                for pos, value in enumerate(values):
                    d = self.expr(_flatten(value), scope)
                    slot = pos % len(out) if out else 0
                    if slot < len(merged):
                        merged[slot] = (_union(merged[slot][0], d[0]),
                                        _union(merged[slot][1], d[1]))
        for key in ("isSourceRowPresent", "isTargetRowPresent"):
            rows = _union(rows, _all(self.exprs(f.get(key), scope)))
        return out, [dict(zip(out, merged))], rows


def _leaf_output(node: PlanNode) -> list[int]:
    f = node.fields
    if node.name == "HiveTableRelation":
        return attr_ids(f.get("dataCols")) + attr_ids(f.get("partitionCols"))
    return attr_ids(f.get("output"))


def _sorts_under_limit(root: PlanNode) -> set[int]:
    """Sorts whose order decides which rows a LIMIT above them keeps (ORDER BY ... LIMIT
    n): only through nodes that keep the order and the rows' identity."""
    matter: set[int] = set()
    stack: list[tuple[PlanNode, bool]] = [(root, False)]
    while stack:
        node, under = stack.pop()
        name = node.name
        if name == "Sort" and under:
            matter.add(id(node))
        keep = name in _LIMITS or (under and name in _KEEPS_LIMIT_ORDER)
        for child in node.children:
            stack.append((child, keep))
    return matter
