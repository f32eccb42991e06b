"""Hot statements: compiled once per dialect and run on the driver's cursor.

SQLAlchemy looks a statement's compiled form up in its cache on every execution and
builds a result object around each; for the small SELECTs every request makes (a
resource by id, a person's versions, the agreement markers), that costs several times
what the database does. A :class:`Hot` statement is rendered once per dialect, binds its
parameters by name, and converts only the columns whose type needs it (a UTC timestamp,
a SQLite boolean), with the column types' own result processors; rows are named tuples.
It runs inside the caller's transaction like any other statement, and a driver error is
raised as SQLAlchemy's ``DBAPIError``, as the rest of the gateway expects. An INSERT or
UPDATE (:meth:`Hot.execute`, the audit chain's appends) binds its values through the
column types' own bind processors, as SQLAlchemy would.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Sequence
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
    row: Callable[..., Any] | None  # None for an INSERT or UPDATE
    binders: dict[str, Callable[[Any], Any]]  # the bind processors of parameters whose type has one


class Hot:
    """A statement rendered once per dialect: :meth:`rows` runs a SELECT with named
    parameters, :meth:`execute` an INSERT or UPDATE of the columns its parameters name."""

    def __init__(self, statement: Any) -> None:
        self.statement: Executable = statement
        self._rendered: dict[tuple[str, tuple[str, ...] | None], _Rendered] = {}

    def _render(self, dialect: Dialect, columns: tuple[str, ...] | None = None) -> _Rendered:
        """Rendered for ``dialect``; an INSERT or UPDATE for the ``columns`` given values
        (the keys of the rows that callers build one way, so once per call site)."""
        rendered = self._rendered.get((dialect.name, columns))
        if rendered is None:
            compiled = self.statement.compile(dialect=dialect, column_keys=list(columns) if columns is not None else None)
            selected = getattr(self.statement, "selected_columns", None)
            returned = list(selected) if selected is not None and self.statement.is_select else []  # type: ignore[attr-defined]
            processors = [(i, p) for i, c in enumerate(returned) if (p := c.type.dialect_impl(dialect).result_processor(dialect, None))]
            rendered = self._rendered[(dialect.name, columns)] = _Rendered(
                str(compiled),
                {name: bind.value for name, bind in compiled.binds.items() if not bind.required},
                tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None,
                processors,
                namedtuple("HotRow", [c.key for c in returned], rename=True)._make if returned else None,  # type: ignore[misc]
                {name: p for name, bind in compiled.binds.items() if (p := bind.type.dialect_impl(dialect).bind_processor(dialect))},
            )
        return rendered

    def _bound(self, rendered: _Rendered, params: dict[str, Any]) -> Any:
        values = {**rendered.defaults, **params}
        for name, process in rendered.binders.items():
            if name in values:
                values[name] = process(values[name])
        return tuple(values[name] for name in rendered.order) if rendered.order is not None else values

    def execute(self, connection: Connection, params: Sequence[dict[str, Any]]) -> None:
        """Run an INSERT or UPDATE once per parameter set (the driver's executemany); every set
        names the same columns."""
        if not params:
            return
        rendered = self._render(connection.dialect, tuple(params[0]))
        bound = [self._bound(rendered, p) for p in params]
        cursor = connection.connection.cursor()
        try:
            cursor.executemany(rendered.sql, bound)
        except connection.dialect.loaded_dbapi.Error as error:
            raise DBAPIError.instance(rendered.sql, bound, error, connection.dialect.loaded_dbapi.Error, hide_parameters=True) from error
        finally:
            cursor.close()

    def rows(self, connection: Connection, **params: Any) -> list[Any]:
        """Every row, as a named tuple of its columns."""
        rendered = self._render(connection.dialect)
        sql, processors, make_row = rendered.sql, rendered.processors, rendered.row
        assert make_row is not None, "rows() runs a SELECT"
        bound = self._bound(rendered, params)
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
