"""Spark's ``TreeNode.toJSON()`` plan form, read back into a small tree (pure, no py4j).

``toJSON()`` writes a tree as a flat pre-order list of node dicts; a child field holds
the child's index among ``children``; a non-child tree field (an expression, a subquery's
``plan``, a command's non-child ``query``) holds its own flat list. This module rebuilds
trees from that and answers the one question the columns rule needs: which expression ids
does the query reference anywhere (every node's expressions, subqueries included, plus
what each plan root returns)?
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# Leaves whose fields define attributes (their output) rather than reference them.
RELATION_LEAVES = frozenset({
    "LogicalRelation", "HiveTableRelation", "DataSourceV2Relation",
    "DataSourceV2ScanRelation", "LocalRelation", "Range", "OneRowRelation",
    "CTERelationRef", "LogicalRDD", "InMemoryRelation", "StreamingRelation",
    "StreamingRelationV2", "StreamingDataSourceV2Relation", "ExternalRDD",
})
_LEFT_ONLY_JOINS = ("LeftSemi", "LeftAnti", "ExistenceJoin")
_SET_OPS_ALL_COLUMNS = frozenset({"Intersect", "Except"})


def simple_name(cls: str) -> str:
    """``org.apache.spark.sql.catalyst.plans.logical.Project`` -> ``Project``."""
    return cls.rsplit(".", 1)[-1].rstrip("$")


@dataclass
class PlanNode:
    cls: str
    fields: dict[str, Any]
    children: list[PlanNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        return simple_name(self.cls)

    def walk(self) -> Iterator[PlanNode]:
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def is_tree(value: Any) -> bool:
    """A flat ``toJSON`` tree: a non-empty list of dicts with ``class``/``num-children``."""
    return (isinstance(value, list) and bool(value) and isinstance(value[0], dict)
            and "class" in value[0] and "num-children" in value[0])


def build(flat: Sequence[dict[str, Any]]) -> PlanNode:
    """Rebuild the tree of one flat pre-order ``toJSON`` list (iteratively: deep plans)."""
    nodes = [PlanNode(str(d.get("class")), d) for d in flat]
    # pre-order: a node's children follow it; a stack of (node, children still missing)
    stack: list[list[Any]] = []
    root = nodes[0] if nodes else PlanNode("?", {})
    for i, node in enumerate(nodes):
        if stack:
            parent = stack[-1]
            parent[0].children.append(node)
            parent[1] -= 1
            if parent[1] == 0:
                stack.pop()
                while stack and stack[-1][1] == 0:
                    stack.pop()
        wanted = int(flat[i].get("num-children", 0) or 0)
        if wanted > 0:
            stack.append([node, wanted])
    return root


def _is_expression_class(cls: str) -> bool:
    # MergeRows$Keep / $Split / $Discard: a MERGE's instructions are expressions that
    # live in the logical plans package
    return ".expressions." in cls or cls.endswith("UDF") or ".analysis.Unresolved" in cls \
        or "MergeRows$" in cls


def _expr_trees(value: Any) -> Iterator[list[dict[str, Any]]]:
    """Every flat tree inside a field value (a tree, a list of trees, an Option...)."""
    if is_tree(value):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _expr_trees(item)


def expr_id(d: dict[str, Any]) -> int | None:
    """An expression's ``exprId`` in its JSON fields (None without one)."""
    e = d.get("exprId")
    if isinstance(e, dict) and "id" in e:
        try:
            return int(e["id"])
        except (TypeError, ValueError):
            return None
    return None


def attr_ids(value: Any) -> list[int]:
    """Expression ids of the top-level attributes/aliases in a Seq[NamedExpression] field."""
    ids: list[int] = []
    for tree in _expr_trees(value):
        i = expr_id(tree[0])
        if i is not None:
            ids.append(i)
    return ids


class PlanIndex:
    """All plan trees of one query (main plan, subqueries, non-child plan fields) and the
    expression ids the query needs from its leaves (top-down, like column pruning)."""

    def __init__(self, flat: Sequence[dict[str, Any]]):
        self.root = build(flat)
        self.roots: list[PlanNode] = [self.root]  # main plan + every nested plan tree
        self._outputs: dict[int, list[int]] = {}
        self._needed: set[int] = set()
        self._cte_defs: dict[Any, PlanNode] = {}
        self._cte_refs: list[PlanNode] = []

    # -- outputs -------------------------------------------------------------------
    def output(self, node: PlanNode) -> list[int]:
        """Expression ids a node returns, computed the way Spark's ``output`` does."""
        key = id(node)
        if key not in self._outputs:
            self._outputs[key] = self._compute_output(node)
        return self._outputs[key]

    def _compute_output(self, node: PlanNode) -> list[int]:
        f = node.fields
        name = node.name
        if name == "HiveTableRelation":
            return attr_ids(f.get("dataCols")) + attr_ids(f.get("partitionCols"))
        if "output" in f and not isinstance(f.get("output"), (int, str)):
            return attr_ids(f.get("output"))
        if name == "Project":
            return attr_ids(f.get("projectList"))
        if name == "Aggregate":
            return attr_ids(f.get("aggregateExpressions"))
        if name == "Window":
            return self._child_output(node, 0) + attr_ids(f.get("windowExpressions"))
        if name == "Generate":
            return self._child_output(node, 0) + attr_ids(f.get("generatorOutput"))
        if name == "Join":
            jt = str(f.get("joinType"))
            if any(k in jt for k in _LEFT_ONLY_JOINS):
                return self._child_output(node, 0)
            return self._child_output(node, 0) + self._child_output(node, 1)
        if name == "WithCTE":
            # children: plan +: cteDefs (Spark 3.5) or cteDefs :+ plan (Spark 4)
            for child in node.children:
                if child.name != "CTERelationDef":
                    return self.output(child)
            return []
        if name in ("Union", "Intersect", "Except"):
            return self._child_output(node, 0)
        out: list[int] = []
        for i in range(len(node.children)):
            out.extend(self._child_output(node, i))
        return out

    def _child_output(self, node: PlanNode, i: int) -> list[int]:
        if i < len(node.children):
            return self.output(node.children[i])
        return []

    # -- required columns -------------------------------------------------------------
    def referenced_ids(self) -> set[int]:
        """Expression ids the query needs, walked top-down the way column pruning does:
        what the written query returns is needed; a Project/Aggregate/Window item adds
        its references only when its own output is needed (so a view's or a DataFrame's
        unused columns are not "read"); every other node's expressions (filters, join
        keys, sort keys, grouping keys, subqueries incl. correlated references) are
        needed. Unions map by position; a CTE reference maps onto its definition."""
        self._needed = set(self.output(_query_of(self.root)))
        for node in self.root.walk():  # definitions first: references map onto them
            if node.name == "CTERelationDef":
                self._cte_defs[node.fields.get("id")] = node
        self._visit(self.root)
        # CTE definitions come after their references in pre-order; map late refs again
        changed = True
        while changed:
            before = len(self._needed)
            for ref in self._cte_refs:
                self._map_cte(ref)
            for d in list(self._cte_defs.values()):
                self._visit(d)
            changed = len(self._needed) != before
        return self._needed

    def _visit(self, root: PlanNode) -> None:
        for node in root.walk():
            name = node.name
            f = node.fields
            if not node.children and name in RELATION_LEAVES:
                if name == "CTERelationRef":
                    self._cte_refs.append(node)
                    self._map_cte(node)
                continue
            if name == "CTERelationDef":
                self._cte_defs[f.get("id")] = node
            if name == "Union":
                out = self.output(node)
                for child in node.children:
                    child_out = self.output(child)
                    for pos, eid in enumerate(out):
                        if eid in self._needed and pos < len(child_out):
                            self._needed.add(child_out[pos])
            elif name in _SET_OPS_ALL_COLUMNS or name == "Distinct":
                for child in node.children:
                    self._needed.update(self.output(child))
            for key, value in f.items():
                if key in ("class", "num-children") or isinstance(value, int):
                    continue
                if key in _DEFINING_FIELDS:
                    continue  # the attributes a node makes, not ones it reads
                if name == "Expand" and key == "projections":
                    self._visit_expand(node, value)
                    continue
                selective = (name in ("Project", "Aggregate") and key in (
                    "projectList", "aggregateExpressions")) or (
                    name == "Window" and key == "windowExpressions")
                for tree in _expr_trees(value):
                    cls = str(tree[0].get("class"))
                    if _is_expression_class(cls):
                        if selective:
                            own = expr_id(tree[0])
                            if own is not None and own not in self._needed:
                                continue
                        self._scan_expression(tree)
                    else:
                        if key in _TARGET_FIELDS and name in _WRITE_WRAPPERS \
                                and name != "ReplaceData":
                            # a V2 write's target relation is written, not read; a
                            # copy-on-write ReplaceData does read whole target rows
                            continue
                        nested = build(tree)
                        self.roots.append(nested)
                        self._needed.update(self.output(_query_of(nested)))
                        self._visit(nested)

    def _visit_expand(self, node: PlanNode, projections: Any) -> None:
        """GROUP BY ROLLUP / CUBE / GROUPING SETS: the analyzer's ``Expand`` lists every
        column of its child in each projection, but Spark's column pruning keeps a
        position only when the Expand's output at that position is needed (ColumnPruning:
        ``Aggregate`` over ``Expand``), so the Project below it and the scans shrink too."""
        out = attr_ids(node.fields.get("output"))
        for projection in projections if isinstance(projections, list) else ():
            if not isinstance(projection, list):
                continue
            trees = [t for t in projection if is_tree(t)]
            for pos, tree in enumerate(trees):
                if pos < len(out) and out[pos] not in self._needed:
                    continue
                self._scan_expression(tree)

    def _map_cte(self, ref: PlanNode) -> None:
        d = self._cte_defs.get(ref.fields.get("cteId"))
        if d is None:
            return
        def_out = self.output(d)
        for pos, eid in enumerate(self.output(ref)):
            if eid in self._needed and pos < len(def_out):
                self._needed.add(def_out[pos])

    def _scan_expression(self, flat: list[dict[str, Any]]) -> None:
        for d in flat:
            i = expr_id(d)
            if i is not None:
                self._needed.add(i)
            plan = d.get("plan")
            if is_tree(plan):  # ScalarSubquery / ListQuery / Exists / LateralSubquery
                nested = build(plan)
                self.roots.append(nested)
                if simple_name(str(d.get("class"))) != "Exists":
                    # EXISTS (SELECT * ...) needs none of what the subquery returns: Spark
                    # rewrites it to a semi join on the correlation and prunes the rest
                    self._needed.update(self.output(nested))
                self._visit(nested)
            for key, value in d.items():
                if key not in ("plan", "class", "num-children") and isinstance(value, list):
                    for tree in _expr_trees(value):
                        if _is_expression_class(str(tree[0].get("class"))):
                            self._scan_expression(tree)


def _query_of(root: PlanNode) -> PlanNode:
    """The part of a plan that returns rows: below write commands, their query child."""
    node = root
    while node.children and (node.name.endswith("Command") or node.name in _WRITE_WRAPPERS):
        node = node.children[0]
    return node


_TARGET_FIELDS = frozenset({"table", "originalTable", "name"})
# fields of inner nodes that list the attributes the node produces (Expand, Generate,
# MergeRows...): Spark leaves them out of the node's references
_DEFINING_FIELDS = frozenset({"output", "generatorOutput"})
_WRITE_WRAPPERS = frozenset({
    "InsertIntoHiveTable", "AppendData", "OverwriteByExpression",
    "OverwritePartitionsDynamic", "ReplaceData", "WriteDelta", "CreateTableAsSelect",
    "ReplaceTableAsSelect", "InsertIntoDir",
})
