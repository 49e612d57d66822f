"""Column lineage, the expression walk: what one expression's value derives from.

``_ExprWalk`` resolves an expression tree to its (direct, indirect) leaf attributes,
attribute by attribute against the scope of its plan node. It is the base of
``column_plans._Extractor``, which sets up its state and supplies ``plan`` for the plan
of a subquery expression. The vocabulary both walks share (``Deps``, ``_Scope``,
``_trees``...) is here too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from definity_spark.lineage.plan import PlanNode, build, expr_id, is_tree, simple_name

# A dependency set: (direct leaf attribute ids, indirect leaf attribute ids).
Deps = tuple[frozenset, frozenset]
_NONE: frozenset = frozenset()
EMPTY: Deps = (_NONE, _NONE)


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


class _ExprWalk:
    """The expression half of ``column_plans._Extractor`` (see the module docstring)."""

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
            eid = expr_id(d)
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
        eid = expr_id(f)
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

    @staticmethod
    def _lookup(eid: int, maps: list[dict[int, Deps]]) -> Deps:
        for m in maps:
            d = m.get(eid)
            if d is not None:
                return d
        return EMPTY


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
