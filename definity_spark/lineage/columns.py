"""Column-level lineage: for every written column, the input columns it derives from.

Pure (plan facts in, ``model.ColumnLineage`` out; no py4j, no Spark import). It reads the
analyzed plan of ``QueryFacts`` (Spark's ``TreeNode.toJSON`` form) bottom up, the way Spark
resolves attributes: every plan node gets, for each attribute it outputs, the leaf
attributes whose values flow into it (*direct*) and those that only decide it
(*indirect*: CASE/IF conditions, window keys, an aggregate's FILTER, a scalar subquery's
filters); every node also carries the leaf attributes that decide which rows it returns
(filters, join conditions, grouping, DISTINCT and set operations, ORDER BY under a LIMIT,
generators, predicate subqueries). Those last ones are the transformation-wide indirect
dependencies, recorded once (``ColumnLineage.indirect_all``) instead of on every column.

Attributes are resolved per node, against its children's outputs (then the enclosing
queries', for correlated subqueries), never by expression id alone: a ``Union``
returns its first child's ids, so an id means one thing inside that child and another
above the union.

Limits (``Limits``): a cap on the dependencies listed per column and a time budget; past
either, the result says ``partial`` and why. Any error gives a partial result too: this
function never raises and never recurses on a plan's depth (iterative walks).
docs/column-lineage.md has the rules and the wire shape.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from definity_spark.lineage import naming
from definity_spark.lineage.commands import COMMANDS
from definity_spark.lineage.facts import METADATA_COLUMNS, LeafFacts, QueryFacts
from definity_spark.lineage.model import ColumnDeps, ColumnLineage
from definity_spark.lineage.plan import (
    RELATION_LEAVES,
    PlanNode,
    attr_ids,
    build,
    is_tree,
    simple_name,
)

logger = logging.getLogger("definity_spark.lineage")

@dataclass(frozen=True)
class Limits:
    """When to stop: ``max_deps`` (direct + indirect) listed per column, a time budget."""

    max_deps: int = 1000
    budget_ms: float = 100.0


# A dependency set: (direct leaf attribute ids, indirect leaf attribute ids).
Deps = tuple[frozenset, frozenset]
_NONE: frozenset = frozenset()
EMPTY: Deps = (_NONE, _NONE)

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
_TARGET_LEAVES = frozenset({
    "ResolvedIdentifier", "ResolvedTable", "UnresolvedIdentifier", "ResolvedDBObjectName",
    "UnresolvedTableOrView", "ResolvedV1Identifier",
})


class _Stop(Exception):
    """The time budget ran out."""


# -- expressions -------------------------------------------------------------------------

def _condition_positions(name: str, n_children: int) -> Iterable[int]:
    """Children of an expression that decide its value without flowing into it."""
    if name == "If":
        return (0,)
    if name == "CaseWhen":  # children: cond1, value1, cond2, value2, ..., [else]
        return range(0, 2 * (n_children // 2), 2)
    if name in ("AggregateExpression", "WindowExpression", "MaxBy", "MinBy", "NullIf"):
        return (1,)  # the FILTER clause; the window spec; the ordering; the null test
    if name in ("PivotFirst", "Keep", "Split", "Discard"):
        return (0,)  # the pivot column; a MERGE instruction's condition
    if name in ("WindowSpecDefinition", "ScalarSubquery", "ListQuery", "Exists",
                "LateralSubquery", "InSubquery"):
        # window keys; a subquery's correlated outer attributes and join condition
        return range(n_children)
    return ()


def _exprid(d: dict[str, Any]) -> int | None:
    e = d.get("exprId")
    if isinstance(e, dict) and "id" in e:
        try:
            return int(e["id"])
        except (TypeError, ValueError):
            return None
    return None


def _union(a: frozenset, b: frozenset) -> frozenset:
    if not b:
        return a
    if not a:
        return b
    return a | b


def _all(d: Deps) -> frozenset:
    return _union(d[0], d[1])


class _Scope:
    """What an expression can see: its node's input attributes, then the enclosing
    queries' (for outer references of correlated subqueries)."""

    __slots__ = ("maps", "outer")

    def __init__(self, maps: list[dict[int, Deps]], outer: _Scope | None) -> None:
        self.maps = maps
        self.outer = outer


class _Extractor:
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

    # -- budget ----------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        if self.ticks & 15 == 0 and time.perf_counter() > self.deadline:
            raise _Stop()

    # -- expressions -------------------------------------------------------------------
    def resolve(self, eid: int, scope: _Scope | None) -> Deps:
        s = scope
        while s is not None:
            for m in s.maps:
                d = m.get(eid)
                if d is not None:
                    return d
            s = s.outer
        d = self.anywhere.get(eid)
        if d is not None:
            return d
        if eid in self.sources:
            return (frozenset((eid,)), _NONE)
        return EMPTY

    def expr(self, flat: list[dict[str, Any]], scope: _Scope | None) -> Deps:
        """(direct, indirect) leaf attributes of one expression tree."""
        if len(flat) == 1:  # the common case: a bare attribute or a literal
            d = flat[0]
            eid = _exprid(d)
            if "plan" not in d:
                name = d.get("name")
                if eid is not None and isinstance(name, str):
                    self.names.setdefault(eid, name)
                return self.resolve(eid, scope) if eid is not None and \
                    simple_name(str(d.get("class"))) != "Alias" else EMPTY
        root = build(flat)
        # iterative post-order: (node, children done?)
        results: dict[int, Deps] = {}
        stack: list[tuple[PlanNode, bool]] = [(root, False)]
        while stack:
            node, done = stack.pop()
            if not done:
                stack.append((node, True))
                for child in node.children:
                    stack.append((child, False))
                continue
            self.tick()
            results[id(node)] = self._expr_node(node, results, scope)
        return results[id(root)]

    def _expr_node(self, node: PlanNode, results: dict[int, Deps],
                   scope: _Scope | None) -> Deps:
        f = node.fields
        name = node.name
        eid = _exprid(f)
        if eid is not None and isinstance(f.get("name"), str):
            self.names.setdefault(eid, f["name"])
        if not node.children and eid is not None and "plan" not in f and name != "Alias":
            return self.resolve(eid, scope)  # AttributeReference & co.
        direct: frozenset = _NONE
        indirect: frozenset = _NONE
        if name == "If" and len(node.children) == 3 and \
                _same_expr(node.children[1], node.children[2]):
            return results[id(node.children[1])]  # UPDATE's untouched columns: IF(c, x, x)
        conditions = set(_condition_positions(name, len(node.children)))
        for i, child in enumerate(node.children):
            d = results[id(child)]
            if i in conditions:
                indirect = _union(indirect, _all(d))
            else:
                direct = _union(direct, d[0])
                indirect = _union(indirect, d[1])
        plan = f.get("plan")
        if is_tree(plan):  # a subquery expression
            ids, maps, rows = self.plan(build(plan), scope)
            out = [self._lookup(i, maps) for i in ids]
            if name == "Exists":  # only which rows exist matters, not what they hold
                indirect = _union(indirect, rows)
            else:  # ScalarSubquery, ListQuery, LateralSubquery: its values flow
                for d in out:
                    direct = _union(direct, d[0])
                    indirect = _union(indirect, d[1])
                indirect = _union(indirect, rows)
        if eid is not None and name == "Alias":
            self.anywhere[eid] = (direct, indirect)
        return direct, indirect

    def exprs(self, value: Any, scope: _Scope | None) -> Deps:
        """Deps of every expression tree in a field (a tree, a list of trees...)."""
        direct: frozenset = _NONE
        indirect: frozenset = _NONE
        for tree in _trees(value):
            d = self.expr(tree, scope)
            direct = _union(direct, d[0])
            indirect = _union(indirect, d[1])
        return direct, indirect

    # -- plans -------------------------------------------------------------------------
    @staticmethod
    def _lookup(eid: int, maps: list[dict[int, Deps]]) -> Deps:
        for m in maps:
            d = m.get(eid)
            if d is not None:
                return d
        return EMPTY

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
            eid = _exprid(tree[0])
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
            eid = _exprid(tree[0])
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


def _flatten(node: PlanNode) -> list[dict[str, Any]]:
    """A rebuilt expression back to its flat pre-order form (fields unchanged)."""
    return [n.fields for n in node.walk()]


def _same_expr(a: PlanNode, b: PlanNode) -> bool:
    """The same expression, whatever the qualifiers its attributes were resolved with."""
    fa, fb = _flatten(a), _flatten(b)
    if len(fa) != len(fb):
        return False
    strip = ("qualifier",)
    return all({k: v for k, v in x.items() if k not in strip} ==
               {k: v for k, v in y.items() if k not in strip} for x, y in zip(fa, fb))


def _trees(value: Any) -> Iterable[list[dict[str, Any]]]:
    if is_tree(value):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _trees(item)


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


# -- the written query ----------------------------------------------------------------------

def _written_query(root: PlanNode) -> PlanNode:
    """The part of the plan whose rows are written, below the write command."""
    node = root
    for _ in range(64):
        name = node.name
        if not (name.endswith(_WRITE_ROOT_SUFFIXES) or name in _WRITE_WRAPPERS):
            return node
        kids = [c for c in node.children if c.name not in _TARGET_LEAVES]
        if kids:
            node = kids[-1]
            continue
        query = node.fields.get("query")
        if is_tree(query):  # a command whose query is not a child (outer CTAS, JDBC save)
            node = build(query)
            continue
        return node
    return node


_LIST_STRING = re.compile(r"^\[(.*)\]$", re.S)


def _output_column_names(root: PlanNode, count: int) -> list[str] | None:
    """``outputColumnNames`` of a V1 write command (``"[a, b]"`` in the JSON), when it
    parses to one name per written attribute."""
    value = root.fields.get("outputColumnNames")
    if isinstance(value, list) and len(value) == count and \
            all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, str):
        m = _LIST_STRING.match(value.strip())
        if m:
            names = [x.strip() for x in m.group(1).split(", ")] if m.group(1) else []
            if len(names) == count:
                return names
    return None


# -- entry points ------------------------------------------------------------------------------

def leaf_sources(leaves: Sequence[LeafFacts], leaf_names: Callable[[LeafFacts], list[str]]
                 ) -> tuple[dict[int, list[tuple[str, str]]], dict[str, dict[str, int]]]:
    """Leaf attribute id -> [(dataset, column)], and each dataset's columns -> their
    position in its schema, datasets in first-seen order (``leaf_names``: the datasets a
    leaf is, as ``naming.leaf_names`` names them)."""
    sources: dict[int, list[tuple[str, str]]] = {}
    order: dict[str, dict[str, int]] = {}
    for leaf in leaves:
        names = leaf_names(leaf)
        for ds in names:
            order.setdefault(ds, {})
        for attr in leaf.output:
            if attr.metadata_col or attr.name in METADATA_COLUMNS:
                continue
            for ds in names:
                known = order[ds]
                known.setdefault(attr.name, len(known))
                pair = (ds, attr.name)
                got = sources.setdefault(attr.expr_id, [])
                if pair not in got:
                    got.append(pair)
    return sources, order


def column_lineage(facts: QueryFacts, output_columns: Sequence[str] | None = None,
                   leaf_names: Callable[[LeafFacts], list[str]] | None = None,
                   limits: Limits | None = None) -> ColumnLineage:
    """Column lineage of one write's facts (never raises).

    ``output_columns``: the written dataset's columns in its read-back order
    (``OutputLineage.schema`` names); a column the query does not produce (a static
    partition value, a column an INSERT's column list leaves out) is listed as made
    from nothing. None: the query's own output. ``leaf_names``: the dataset names of a
    leaf (default: ``naming.leaf_names`` with its default options).
    """
    limits = limits or Limits()
    try:
        return _column_lineage(facts, output_columns, leaf_names, limits)
    except _Stop:
        return ColumnLineage(partial=True, reason="time budget")
    except Exception as exc:  # never into the host: a plan shape not understood
        logger.debug("column lineage failed: %r", exc)
        return ColumnLineage(partial=True, reason=f"error: {type(exc).__name__}")


def for_columns(lineage: ColumnLineage, names: Sequence[str]) -> ColumnLineage:
    """The same lineage for another order or subset of the written columns, matched by
    name (case-insensitive); a name it does not have is made from nothing. For a nested
    write folded into its outer command (CTAS, saveAsTable): the inner write has the
    plan, the outer command the table's schema (partition columns last)."""
    by_name: dict[str, ColumnDeps] = {}
    for col in lineage.columns:
        by_name.setdefault(col.name.lower(), col)
    cols = []
    for name in names:
        found = by_name.get(name.lower())
        cols.append(ColumnDeps(name=name) if found is None else
                    ColumnDeps(name=name, direct=found.direct, indirect=found.indirect,
                               truncated=found.truncated))
    return ColumnLineage(columns=tuple(cols), indirect_all=lineage.indirect_all,
                         partial=lineage.partial, reason=lineage.reason)


def _column_lineage(facts: QueryFacts, output_columns: Sequence[str] | None,
                    leaf_names: Callable[[LeafFacts], list[str]] | None,
                    limits: Limits) -> ColumnLineage:
    if not facts.plan or facts.partial:
        return ColumnLineage(partial=True, reason="no plan" if not facts.plan
                             else "plan read partially")
    sources, order = leaf_sources(facts.leaves, leaf_names or naming.leaf_names)
    ex = _Extractor(facts, sources, limits)
    root = build(facts.plan)
    query = _written_query(root)
    if query.name.endswith(_WRITE_ROOT_SUFFIXES) or query.name in _WRITE_WRAPPERS:
        # a command that keeps its query out of the plan (Delta's MergeIntoCommand...):
        # nothing to read the columns from; say so rather than list them as from nothing
        return ColumnLineage(partial=True, reason=f"no query in {query.name}")
    ids, maps, rows = ex.plan(query, None)
    names = _output_column_names(root, len(ids)) if query is not root else None
    if names is None:
        names = [ex.names.get(eid, f"col{i}") for i, eid in enumerate(ids)]
    by_name: dict[str, list[int]] = {}
    for pos, n in enumerate(names):
        by_name.setdefault(n.lower(), []).append(pos)
    wanted = list(output_columns) if output_columns is not None else \
        [n for n in names if n not in METADATA_COLUMNS]
    # A merge-on-read row-level write (WriteDelta: DELETE, and the rows a MERGE/UPDATE
    # leaves alone) writes deletes, not rows: what it does not write keeps the values of
    # the target's own column.
    kept: dict[str, int] = {}
    if root.name == "WriteDelta":
        for tree in _trees(root.fields.get("table")):
            for attr in _trees(build(tree).fields.get("output")):
                eid = _exprid(attr[0])
                if eid is not None and isinstance(attr[0].get("name"), str):
                    kept.setdefault(attr[0]["name"].lower(), eid)
    partial = False
    reason = None
    columns: list[ColumnDeps] = []
    for col in wanted:
        slots = by_name.get(col.lower())
        if not slots and col.lower() in kept and kept[col.lower()] in sources:
            token = frozenset((kept[col.lower()],))
            columns.append(ColumnDeps(name=col, direct=_grouped(token, sources, order)))
            continue
        if not slots:
            columns.append(ColumnDeps(name=col))
            continue
        pos = slots.pop(0)
        direct, indirect = ex._lookup(ids[pos], maps)
        full_d = _grouped(direct, sources, order)
        full_i = _grouped(indirect - direct, sources, order, exclude=full_d)
        d, left = _capped(full_d, limits.max_deps)
        ind, _ = _capped(full_i, left)
        cut = _count(d) + _count(ind) < _count(full_d) + _count(full_i)
        if cut:
            partial, reason = True, "max_deps"
        columns.append(ColumnDeps(name=col, direct=d, indirect=ind, truncated=cut))
    indirect_all = _grouped(rows, sources, order)
    if _count(indirect_all) > limits.max_deps:
        partial, reason = True, reason or "max_deps"
        indirect_all, _ = _capped(indirect_all, limits.max_deps)
    if ex.unknown:
        logger.debug("column lineage: plan nodes without a rule: %s", sorted(ex.unknown))
    return ColumnLineage(columns=tuple(columns), indirect_all=indirect_all,
                         partial=partial, reason=reason)


def _grouped(tokens: frozenset, sources: dict[int, list[tuple[str, str]]],
             order: dict[str, dict[str, int]],
             exclude: dict[str, tuple[str, ...]] | None = None) -> dict[str, tuple[str, ...]]:
    """Leaf attribute ids -> dataset -> columns (datasets in first-seen order, columns in
    the dataset's schema order); ``exclude``: pairs already listed as direct."""
    found: dict[str, set[str]] = {}
    for token in tokens:
        for ds, col in sources.get(token, ()):
            if exclude and col in exclude.get(ds, ()):
                continue
            found.setdefault(ds, set()).add(col)
    if not found:
        return {}
    ranks = list(order)
    out: dict[str, tuple[str, ...]] = {}
    for ds in sorted(found, key=ranks.index) if len(found) > 1 else found:
        position = order[ds]
        out[ds] = tuple(sorted(found[ds], key=position.__getitem__))
    return out


def _count(grouped: dict[str, tuple[str, ...]]) -> int:
    return sum(len(v) for v in grouped.values())


def _capped(grouped: dict[str, tuple[str, ...]], cap: int
            ) -> tuple[dict[str, tuple[str, ...]], int]:
    """The first ``cap`` (dataset, column) pairs, and how many more would fit."""
    out: dict[str, tuple[str, ...]] = {}
    left = cap
    for ds, cols in grouped.items():
        if left <= 0:
            break
        out[ds] = cols[:left]
        left -= len(out[ds])
    return out, left


def to_json(lineage: ColumnLineage) -> dict[str, Any]:
    """The wire form (docs/column-lineage.md): lists, no empty keys."""
    body: dict[str, Any] = {"version": 1}
    cols = []
    for c in lineage.columns:
        item: dict[str, Any] = {"name": c.name}
        if c.direct:
            item["direct"] = {ds: list(v) for ds, v in c.direct.items()}
        if c.indirect:
            item["indirect"] = {ds: list(v) for ds, v in c.indirect.items()}
        if c.no_inputs:
            item["no_inputs"] = True
        if c.truncated:
            item["truncated"] = True
        cols.append(item)
    body["columns"] = cols
    if lineage.indirect_all:
        body["indirect_all"] = {ds: list(v) for ds, v in lineage.indirect_all.items()}
    if lineage.partial:
        body["partial"] = True
        if lineage.reason:
            body["reason"] = lineage.reason
    return body
