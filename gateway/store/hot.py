"""Hot read statements: compiled once per dialect and run on the driver's cursor.

SQLAlchemy looks a statement's compiled form up in its cache on every execution and
builds a result object around each; for the small SELECTs every request makes (a
resource by id, a person's versions, the agreement markers), that costs several times
what the database does. A :class:`Hot` statement is rendered once per dialect, binds its
parameters by name, and converts only the columns whose type needs it (a UTC timestamp,
a SQLite boolean), with the column types' own result processors; rows are named tuples.
It runs inside the caller's transaction like any other statement, and a driver error is
raised as SQLAlchemy's ``DBAPIError``, as the rest of the gateway expects.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable


class _Rendered(NamedTuple):
    sql: str
    defaults: dict[str, Any]
    order: tuple[str, ...] | None  # parameter names in position order, for positional drivers
    processors: list[tuple[int, Callable[[Any], Any]]]
    row: Callable[..., Any]


class Hot:
    """A SELECT rendered once per dialect; :meth:`rows` runs it with named parameters."""

    def __init__(self, statement: Any) -> None:
        self.statement: Executable = statement
        self._rendered: dict[str, _Rendered] = {}

    def _render(self, dialect: Dialect) -> _Rendered:
        rendered = self._rendered.get(dialect.name)
        if rendered is None:
            compiled = self.statement.compile(dialect=dialect)
            columns = list(self.statement.selected_columns)  # type: ignore[attr-defined]
            processors = [(i, p) for i, c in enumerate(columns) if (p := c.type.dialect_impl(dialect).result_processor(dialect, None))]
            rendered = self._rendered[dialect.name] = _Rendered(
                str(compiled),
                {name: bind.value for name, bind in compiled.binds.items() if not bind.required},
                tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None,
                processors,
                namedtuple("HotRow", [c.key for c in columns], rename=True)._make,  # type: ignore[misc]
            )
        return rendered

    def rows(self, connection: Connection, **params: Any) -> list[Any]:
        """Every row, as a named tuple of its columns."""
        sql, defaults, order, processors, make_row = self._render(connection.dialect)
        values = {**defaults, **params}
        bound: Any = tuple(values[name] for name in order) if order is not None else values
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, bound)
            fetched = cursor.fetchall()
        except connection.dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(sql, bound, error, connection.dialect.loaded_dbapi.Error, hide_parameters=True) from error
        finally:
            cursor.close()
        if not processors:
            return [make_row(row) for row in fetched]
        rows = []
        for row in fetched:
            converted = list(row)
            for index, process in processors:
                converted[index] = process(converted[index])
            rows.append(make_row(converted))
        return rows

    def first(self, connection: Connection, **params: Any) -> Any:
        """The first row, or None."""
        rows = self.rows(connection, **params)
        return rows[0] if rows else None

    def scalar(self, connection: Connection, **params: Any) -> Any:
        """The first column of the first row, or None."""
        rows = self.rows(connection, **params)
        return rows[0][0] if rows else None
