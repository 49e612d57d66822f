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

Here: the entry points (``column_lineage``, ``for_columns``, ``leaf_sources``,
``to_json``) and the written query. The walks: ``column_plans`` (plan nodes) and
``column_exprs`` (expressions).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from definity_spark.lineage import naming
from definity_spark.lineage.column_exprs import (
    Deps,
    _all,
    _flatten,
    _Scope,
    _Stop,
    _trees,
    _union,
)
from definity_spark.lineage.column_plans import (
    _WRITE_ROOT_SUFFIXES,
    _WRITE_WRAPPERS,
    Limits,
    _Extractor,
)
from definity_spark.lineage.facts import METADATA_COLUMNS, LeafFacts, QueryFacts
from definity_spark.lineage.model import ColumnDeps, ColumnLineage
from definity_spark.lineage.plan import PlanNode, build, expr_id, is_tree

logger = logging.getLogger("definity_spark.lineage")

_TARGET_LEAVES = frozenset({
    "ResolvedIdentifier", "ResolvedTable", "UnresolvedIdentifier", "ResolvedDBObjectName",
    "UnresolvedTableOrView", "ResolvedV1Identifier",
})


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


# Delta's row-level commands: their plans (``target``, MERGE's ``source``), conditions and
# assignments are fields of the command, not children
_ROW_LEVEL = frozenset({"MergeIntoCommand", "UpdateCommand", "DeleteCommand"})
_MERGE_CLAUSES = ("matchedClauses", "notMatchedClauses", "notMatchedBySourceClauses")


def _row_level(ex: _Extractor, node: PlanNode) -> tuple[list[str], list[Deps], frozenset]:
    """(written columns, their deps, leaf attributes deciding rows) of a Delta MERGE,
    UPDATE or DELETE: every column keeps its target's values where no assignment sets
    them; an assignment's expression is direct, its clause's condition indirect; the
    command's condition (MERGE's match, DELETE's) decides rows."""
    f = node.fields
    t_ids, t_maps, rows = ex.plan(build(f["target"]), None)
    maps = list(t_maps)
    if is_tree(f.get("source")):
        _, s_maps, s_rows = ex.plan(build(f["source"]), None)
        maps += s_maps
        rows = _union(rows, s_rows)
    scope = _Scope(maps, None)
    names = [ex.names.get(eid, f"col{i}") for i, eid in enumerate(t_ids)]
    deps = [ex._lookup(eid, t_maps) for eid in t_ids]
    at = {n.lower(): i for i, n in enumerate(names)}
    condition = _all(ex.exprs(f.get("condition"), scope))

    def assign(i: int | None, value: PlanNode, decided_by: frozenset) -> None:
        if i is None or (not value.children and expr_id(value.fields) == t_ids[i]):
            return  # not a target column, or the column set to itself
        d = ex.expr(_flatten(value), scope)
        deps[i] = (_union(deps[i][0], d[0]), _union(_union(deps[i][1], d[1]), decided_by))

    if node.name == "UpdateCommand":
        for i, tree in enumerate(list(_trees(f.get("updateExpressions")))[:len(deps)]):
            assign(i, build(tree), condition)
        return names, deps, rows
    rows = _union(rows, condition)
    for clauses in (f.get(k) for k in _MERGE_CLAUSES):
        for tree in _trees(clauses):
            clause = build(tree)
            actions = [a for a in clause.fields.get("actions") or () if isinstance(a, int)]
            decided_by: frozenset = frozenset()
            for j, child in enumerate(clause.children):
                if j not in actions:  # the clause's own condition
                    decided_by = _union(decided_by, _all(ex.expr(_flatten(child), scope)))
            if not actions:  # WHEN ... THEN DELETE: which rows are written
                rows = _union(rows, decided_by)
            for j in actions:
                action = clause.children[j]
                parts = _LIST_STRING.match(str(action.fields.get("targetColNameParts", "")))
                col = parts.group(1).split(", ")[0].lower() if parts else ""
                if action.children:
                    assign(at.get(col), action.children[0], decided_by)
    return names, deps, rows


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
    row_level = query.name in _ROW_LEVEL and is_tree(query.fields.get("target"))
    if not row_level and (query.name.endswith(_WRITE_ROOT_SUFFIXES)
                          or query.name in _WRITE_WRAPPERS):
        # a command that keeps its query out of the plan (Delta's MergeIntoCommand...):
        # nothing to read the columns from; say so rather than list them as from nothing
        return ColumnLineage(partial=True, reason=f"no query in {query.name}")
    if row_level:
        names, deps, rows = _row_level(ex, query)
    else:
        ids, maps, rows = ex.plan(query, None)
        deps = [ex._lookup(eid, maps) for eid in ids]
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
                eid = expr_id(attr[0])
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
        direct, indirect = deps[pos]
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
