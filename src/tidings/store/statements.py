"""One statement text for both backends; only the executor differs.

A statement is plain SQL whose ``{}`` each stand for one parameter: a value, or a list of them
in ``x IN ({})``. :func:`rows_of` runs it on SQLite through the plain ``sqlite3`` connection
(``?`` placeholders, one per value) and on PostgreSQL as the driver's own statement (``$n``
parameters, a list as one array), so that the queries of the hot path are written once.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.store.db import placeholders, sqlite_rows


async def rows_of(conn: AsyncConnection, sql: str, *parameters: Any) -> list[Any]:
    """Rows (as tuples) of ``sql``, each of whose ``{}`` stands for one of ``parameters``:
    a value, or a list or tuple of them (``x IN ({})``; not empty). A statement without rows
    (an ``UPDATE`` without ``RETURNING``) gives none.

    One statement for both backends, only the executor differs: on SQLite it runs on the plain
    ``sqlite3`` connection (:func:`~tidings.store.db.sqlite_rows`: a few µs where SQLAlchemy's
    statement building, compiling of expanding ``IN`` lists and result processing cost
    ~100-300 µs a query); on PostgreSQL as the driver's own statement (:func:`_postgres`).
    """
    if conn.dialect.name != "sqlite":
        statement, values = _postgres(sql, parameters)
        result = await conn.exec_driver_sql(statement, values)
        return list(result) if result.returns_rows else []
    marks: list[str] = []
    flat: list[Any] = []
    for parameter in parameters:
        many = list(parameter) if isinstance(parameter, list | tuple) else [parameter]
        marks.append(placeholders(len(many)))
        flat += many
    return await sqlite_rows(conn, sql.format(*marks), flat)


_PG_PLANS: dict[str, tuple[list[str], list[bool]]] = {}


def _postgres(sql: str, parameters: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    """``sql`` with ``$n`` parameters for PostgreSQL; a list in ``x IN ({})`` as one array.

    ``x IN ({})`` becomes ``x = ANY($n)`` (``NOT IN``: ``<> ALL``): the statement's text no
    longer depends on how many values the list holds, so the driver prepares it once per
    connection instead of once per list length. A list anywhere else is spread out.
    """
    plan = _PG_PLANS.get(sql)
    if plan is None:
        literals: list[str] = []
        arrays: list[bool] = []
        for literal, field, _, _ in string.Formatter().parse(sql):
            literals.append(literal)
            if field is not None:
                arrays.append(False)
        literals += [""] * (len(arrays) + 1 - len(literals))
        for i in range(len(arrays)):
            before, after = literals[i], literals[i + 1]
            head = before.rstrip()
            if head.upper().endswith("IN (") and after.lstrip().startswith(")"):
                negated = head[:-4].rstrip().upper().endswith("NOT")
                cut = head[:-4].rstrip()[:-3] if negated else head[:-4]
                literals[i] = cut.rstrip() + (" <> ALL(" if negated else " = ANY(")
                arrays[i] = True
        plan = _PG_PLANS[sql] = (literals, arrays)
    literals, arrays = plan
    parts = [literals[0]]
    values: list[Any] = []
    for parameter, array, literal in zip(parameters, arrays, literals[1:], strict=True):
        listed = isinstance(parameter, list | tuple)
        if array:
            values.append(list(parameter) if listed else [parameter])
            parts.append(f"${len(values)}")
        else:
            many = list(parameter) if listed else [parameter]
            parts.append(", ".join(f"${len(values) + i + 1}" for i in range(len(many))))
            values += many
        parts.append(literal)
    return "".join(parts), tuple(values)


def for_backend(conn: AsyncConnection, sql: str) -> str:
    """``sql`` as ``conn``'s backend takes it: on PostgreSQL without SQLite's planner hints.

    A unary ``+`` before a column (``+status``) keeps a term out of SQLite's choice of index
    (https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_);
    PostgreSQL has no unary ``+`` for text and needs no such hint. Cached per text.
    """
    if conn.dialect.name == "sqlite":
        return sql
    plain = _UNHINTED.get(sql)
    if plain is None:
        plain = _UNHINTED[sql] = " ".join(
            word[1:] if word.startswith("+") and word[1:2].isalpha() else word
            for word in sql.split(" ")
        )
    return plain


_UNHINTED: dict[str, str] = {}
