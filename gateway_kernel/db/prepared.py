"""Prepared queries: SQL generated once per database, run with new values (:class:`Prepared`)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import peewee

from .connect import database


class Param(peewee.ColumnBase):
    """A named placeholder in a :class:`Prepared` query: ``Engine.owner == Param("owner")``.

    Values are converted like literal ones (a field's ``db_value`` on the other side of a
    comparison applies), but at run time.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def __sql__(self, ctx: peewee.Context) -> peewee.Context:
        return ctx.value(_Slot(self.name, ctx.state.converter), converter=False)


@dataclass(frozen=True)
class _Slot:
    name: str
    converter: Callable[[object], object] | None


@dataclass(frozen=True)
class _Compiled:
    query: peewee.Query
    sql: str
    params: tuple[object, ...]  # fixed values and _Slot markers, in placeholder order


class Prepared:
    """A peewee query turned into SQL once per database, then run with new values.

    Generating SQL is peewee's expensive part (0.1-0.3 ms for a small SELECT, more than
    Falcon's whole request: docs/PERFORMANCE.md); executing it on SQLite or a pooled
    PostgreSQL connection costs a few microseconds. Build hot-path queries once, at import
    or start-up, with :class:`Param` where values change::

        ENGINES_OF = Prepared(lambda: Engine.select(Engine.id, Engine.name)
                              .where(Engine.owner == Param("owner"))
                              .order_by(Engine.name))

        for engine in ENGINES_OF.run(owner=account.id):   # model instances, as usual
            ...

    ``.tuples()``, ``.dicts()``, joins and ``.objects()`` behave as on the query itself.
    Thread-safe; the SQL is cached per database (SQLite and PostgreSQL differ), so one
    Prepared serves every gateway in the process.
    """

    def __init__(self, build: Callable[[], peewee.Query]) -> None:
        self._build = build
        self._compiled: weakref.WeakKeyDictionary[peewee.Database, _Compiled] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def _for(self, db: peewee.Database) -> _Compiled:
        compiled = self._compiled.get(db)
        if compiled is None:
            query = self._build()
            sql, params = db.get_sql_context().sql(query).query()
            compiled = _Compiled(query, sql, tuple(params))
            with self._lock:
                self._compiled[db] = compiled
        return compiled

    def sql(self, db: peewee.Database | None = None) -> tuple[str, tuple[object, ...]]:
        """The SQL and parameter template for ``db`` (default: the current gateway's)."""
        compiled = self._for(db or database._target())
        return compiled.sql, compiled.params

    def cursor(self, **values: object) -> Any:
        """Execute on the current gateway's database; the raw DB-API cursor."""
        db = database._target()
        compiled = self._for(db)
        params = [_bind(p, values) if isinstance(p, _Slot) else p for p in compiled.params]
        return db.execute_sql(compiled.sql, params)

    def run(self, **values: object) -> Any:
        """Execute; rows as the query would give them (models, tuples, dicts...)."""
        db = database._target()
        compiled = self._for(db)
        params = [_bind(p, values) if isinstance(p, _Slot) else p for p in compiled.params]
        return compiled.query._get_cursor_wrapper(db.execute_sql(compiled.sql, params))

    def first(self, **values: object) -> Any:
        """The first row, or None (give the query a ``.limit(1)``)."""
        for row in self.run(**values):
            return row
        return None

    def scalar(self, **values: object) -> Any:
        """The first column of the first row, or None."""
        row = self.cursor(**values).fetchone()
        return None if row is None else row[0]


def _bind(slot: _Slot, values: dict[str, object]) -> object:
    try:
        value = values[slot.name]
    except KeyError:
        raise TypeError(f"prepared query needs a value for {slot.name!r}") from None
    return slot.converter(value) if slot.converter is not None else value
