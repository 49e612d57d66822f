"""Column lineage of a SQL SELECT derived from its text alone, with sqlglot (no Spark, no
plugin code): the independent expectation the TPC-H corpus is checked against.

The same definitions as docs/column-lineage.md, applied to the SQL instead of Spark's
plan: a column reference is *indirect* for a select item when it sits in a condition
(CASE/IF condition, window PARTITION BY / ORDER BY, an aggregate's FILTER), else *direct*;
through derived tables and CTEs a dependency stays direct only along direct uses; the
transformation-wide set is every column used by a WHERE, JOIN ... ON, GROUP BY, HAVING,
QUALIFY, DISTINCT, ORDER BY under a LIMIT, and the select items of IN / scalar
subqueries in those clauses (an EXISTS subquery's select list is not used), in every
scope of the query. Written for the shapes of the TPC-H queries: scalar subqueries in a
select list and set operations are refused (ValueError) rather than guessed.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

Pair = tuple[str, str]  # (table, column)
Deps = tuple[set[Pair], set[Pair]]


def schema_from_ddl(ddl: str) -> dict[str, dict[str, str]]:
    """{table: {column: type}} of the CREATE TABLE statements of a DDL script."""
    schema: dict[str, dict[str, str]] = {}
    for statement in sqlglot.parse(ddl, read="spark"):
        if statement is None:
            continue
        table = statement.find(exp.Table)
        schema[table.name] = {c.name: c.args["kind"].sql("spark")
                              for c in statement.find_all(exp.ColumnDef)}
    return schema


def _in_condition(column: exp.Expression, top: exp.Expression) -> bool:
    node = column
    while node is not None and node is not top:
        parent = node.parent
        if isinstance(parent, exp.If) and parent.args.get("this") is node:
            return True
        if isinstance(parent, exp.Window) and node.arg_key in ("partition_by", "order"):
            return True
        if isinstance(parent, exp.Filter) and node.arg_key == "expression":
            return True
        node = parent
    return False


def _own_columns(expression: exp.Expression) -> list[exp.Column]:
    """Column references of an expression, not those inside its subqueries."""
    out = []
    for col in expression.find_all(exp.Column):
        node = col.parent
        inside = False
        while node is not None and node is not expression:
            if isinstance(node, (exp.Subquery, exp.Select)) and node is not expression:
                inside = True
                break
            node = node.parent
        if not inside:
            out.append(col)
    return out


class Oracle:
    def __init__(self, sql: str, schema: dict[str, dict[str, str]]) -> None:
        self.ast = qualify(sqlglot.parse_one(sql, read="spark"), schema=schema,
                           dialect="spark", validate_qualify_columns=False)
        self.root = build_scope(self.ast)
        if self.root is None or isinstance(self.ast, exp.Union):
            raise ValueError("not a plain SELECT")

    # -- one expression in one scope --------------------------------------------------
    def _source(self, scope: Scope, table: str) -> tuple[Scope, object] | None:
        s: Scope | None = scope
        while s is not None:
            if table in s.sources:
                return s, s.sources[table]
            s = s.parent
        return None

    def resolve(self, scope: Scope, col: exp.Column) -> Deps:
        found = self._source(scope, col.table)
        if found is None:
            raise ValueError(f"unresolved column {col.sql()}")
        _, source = found
        if isinstance(source, exp.Table):
            return {(source.name, col.name)}, set()
        if isinstance(source, Scope):
            select = source.expression
            if not isinstance(select, exp.Select):
                raise ValueError("set operations are not handled")
            for item in select.selects:
                if item.alias_or_name == col.name:
                    return self.classify(source, item)
        raise ValueError(f"no {col.name} in {col.table}")

    def classify(self, scope: Scope, expression: exp.Expression) -> Deps:
        direct: set[Pair] = set()
        indirect: set[Pair] = set()
        for col in _own_columns(expression):
            d, i = self.resolve(scope, col)
            if _in_condition(col, expression):
                indirect |= d | i
            else:
                direct |= d
                indirect |= i
        if expression.find(exp.Subquery) is not None and expression is not scope.expression:
            raise ValueError("a subquery inside a select item is not handled")
        return direct, indirect

    # -- the answers --------------------------------------------------------------------
    def columns(self) -> list[Deps]:
        """(direct, indirect) of each select item of the query, in order."""
        out = []
        for item in self.ast.selects:
            d, i = self.classify(self.root, item)
            out.append((d, i - d))
        return out

    def rows(self) -> set[Pair]:
        """Columns deciding which rows the query returns, in every scope."""
        found: set[Pair] = set()
        for scope in self.root.traverse():
            select = scope.expression
            if not isinstance(select, exp.Select):
                raise ValueError("set operations are not handled")
            clauses: list[exp.Expression] = []
            for key in ("where", "group", "having", "qualify"):
                if select.args.get(key) is not None:
                    clauses.append(select.args[key])
            for join in select.args.get("joins") or ():
                if join.args.get("on") is not None:
                    clauses.append(join.args["on"])
            if select.args.get("limit") is not None and select.args.get("order") is not None:
                clauses.append(select.args["order"])
            if select.args.get("distinct") is not None:
                clauses.extend(select.selects)
            if scope.is_subquery and not isinstance(select.parent, exp.Exists):
                clauses.extend(select.selects)  # IN / scalar subquery: its values compared
            for clause in clauses:
                for col in _own_columns(clause):
                    if not col.table and col.name in {s.alias_or_name for s in select.selects}:
                        item = next(s for s in select.selects if s.alias_or_name == col.name)
                        d, i = self.classify(scope, item)  # ORDER BY an output alias
                    else:
                        d, i = self.resolve(scope, col)
                    found |= d | i
        return found
