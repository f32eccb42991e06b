"""Hot read statements: compiled once per dialect and run on the driver's cursor.

SQLAlchemy looks a statement's compiled form up in its cache on every execution and
wraps each result; for the few tiny SELECTs every consent decision and consent-filtered
read makes (a person's versions, the agreement markers), that costs several times what
the database does. A :class:`Hot` statement skips both: its SQL is rendered once per
dialect, its parameters are bound by name, and rows come back as the driver's tuples
(so only for columns that need no result conversion: text, integers, markers compared
for equality). It runs inside the caller's transaction like any other statement, and a
driver error is raised as SQLAlchemy's ``DBAPIError``, as the rest of the gateway expects.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable


class Hot:
    """A SELECT rendered once per dialect; :meth:`rows` runs it with named parameters."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._rendered: dict[str, tuple[str, dict[str, Any], tuple[str, ...] | None]] = {}

    def _render(self, dialect: Dialect) -> tuple[str, dict[str, Any], tuple[str, ...] | None]:
        rendered = self._rendered.get(dialect.name)
        if rendered is None:
            compiled = self.statement.compile(dialect=dialect)
            defaults = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
            order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
            rendered = self._rendered[dialect.name] = (str(compiled), defaults, order)
        return rendered

    def rows(self, connection: Connection, **params: Any) -> list[tuple[Any, ...]]:
        """Every row, as the driver returns it."""
        sql, defaults, order = self._render(connection.dialect)
        values = {**defaults, **params}
        bound: Any = tuple(values[name] for name in order) if order is not None else values
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, bound)
            return cursor.fetchall()
        except connection.dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(sql, bound, error, connection.dialect.loaded_dbapi.Error, hide_parameters=True) from error
        finally:
            cursor.close()

    def scalar(self, connection: Connection, **params: Any) -> Any:
        """The first column of the first row, or None."""
        rows = self.rows(connection, **params)
        return rows[0][0] if rows else None
