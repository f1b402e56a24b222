"""One door to the database, SQLite or PostgreSQL: the connection, its lock, transactions
and the few differences of dialect (placeholders, how times and dates travel).

SQL in this package is written with `?` placeholders; for PostgreSQL they become `%s`.
Nothing outside city_platform/store knows sqlite3's or psycopg's exceptions: both become
StoreError.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

SQLITE, POSTGRESQL = "sqlite", "postgresql"


class StoreError(Exception):
    """The store cannot be opened or used; the message names the store and the reason."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Database:
    """A connection shared by the threads of one process, one statement at a time."""

    dialect: str

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.RLock()
        self._conn: Any = None

    # dialect differences ---------------------------------------------------------------
    def sql(self, text: str) -> str:
        return text

    def ts(self, moment: datetime) -> Any:
        """A UTC time as the database takes it."""
        return moment

    def day(self, value: date) -> Any:
        return value

    # statements ------------------------------------------------------------------------
    def execute(self, text: str, params: Sequence[Any] | Mapping[str, Any] = (),
                binary: bool = False) -> Cursor:
        """`binary`: PostgreSQL parameters in binary form (arrays of thousands of values
        dump several times faster than as text literals)."""
        try:
            with self.lock:
                if binary and self.dialect == POSTGRESQL:
                    cursor: Cursor = self._conn.execute(self.sql(text), params, binary=True)
                else:
                    cursor = self._conn.execute(self.sql(text), params)
                return cursor
        except self.errors() as e:
            raise StoreError(f"{self.describe()}: {e}") from None

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            with self.lock:
                cursor = self._conn.cursor()
                cursor.executemany(self.sql(text), rows)
        except self.errors() as e:
            raise StoreError(f"{self.describe()}: {e}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError

    def errors(self) -> tuple[type[BaseException], ...]:
        raise NotImplementedError

    def describe(self) -> str:
        """The store's URL without a password."""
        parts = urlsplit(self.url)
        if parts.password:
            return self.url.replace(f":{parts.password}@", ":***@")
        return self.url

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SqliteDatabase(Database):
    """One file; WAL and synchronous=FULL: a COMMIT is on disk when it returns, so
    "accepted" means durable."""

    dialect = SQLITE

    def __init__(self, url: str, read_only: bool = False) -> None:
        super().__init__(url)
        self.path = sqlite_path(url)
        try:
            if read_only:
                if not self.path.is_file():
                    raise StoreError(f"{url}: no such file")
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                             check_same_thread=False, isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(str(self.path), check_same_thread=False,
                                             isolation_level=None, timeout=30)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"{url}: {e}") from None

    def ts(self, moment: datetime) -> Any:
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")

    def day(self, value: date) -> Any:
        return value.isoformat()

    def errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreError(f"{self.describe()}: {e}") from None
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise


class PostgresDatabase(Database):
    """psycopg 3 in autocommit mode; every write is an explicit transaction.

    A small pool of connections: each transaction (and each statement outside one) takes
    a connection of its own, so concurrent batches overlap their round trips and commits
    (PostgreSQL groups the commits' WAL flushes) instead of queueing behind one
    connection. A thread inside a transaction keeps its connection for every statement
    of it. The transactions stay correct side by side: a rating_id inserted by two at
    once makes the second wait for the first and then find it (ON CONFLICT DO NOTHING),
    and the roll-up rows are updated in a fixed order, so they cannot deadlock."""

    dialect = POSTGRESQL
    POOL_SIZE = 8

    def __init__(self, url: str, read_only: bool = False, session: Sequence[str] = ()
                 ) -> None:
        """`session`: statements every new connection runs first (unless read-only),
        e.g. creating a temporary table it keeps for its whole life."""
        super().__init__(url)
        import psycopg  # only a PostgreSQL store needs it

        self._psycopg = psycopg
        self._read_only = read_only
        self._session = () if read_only else tuple(session)
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._all: list[Any] = []
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        self._release(self._connect())  # fail now, with the reason, if we cannot

    def _connect(self) -> Any:
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            if self._read_only:
                conn.execute("SET default_transaction_read_only = on")
            for statement in self._session:
                conn.execute(statement)
        except self._psycopg.errors.InsufficientPrivilege as e:
            # REVOKE TEMPORARY … FROM PUBLIC is a common hardening: say what we need.
            raise StoreError(f"{self.describe()}: {str(e).splitlines()[0]}: hcp-platform "
                             "keeps each incoming batch in a temporary table: GRANT "
                             "TEMPORARY ON DATABASE to its role") from None
        except self._psycopg.Error as e:
            raise StoreError(f"{self.describe()}: {str(e).strip()}") from None
        with self._pool_lock:
            self._all.append(conn)
        return conn

    def _acquire(self) -> Any:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._pool_lock:
            grow = len(self._all) < self.POOL_SIZE
        if grow:
            return self._connect()
        return self._idle.get()

    def _release(self, conn: Any) -> None:
        if conn.closed or conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            # A connection that broke (server restarted) is dropped; the next caller
            # opens a fresh one.
            with self._pool_lock:
                if conn in self._all:
                    self._all.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()
            return
        self._idle.put(conn)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s")

    def errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)

    def execute(self, text: str, params: Sequence[Any] | Mapping[str, Any] = (),
                binary: bool = False) -> Cursor:
        # The rows are in the cursor once execute returns (a client-side cursor): the
        # connection can go back to the pool before the caller fetches them.
        try:
            with self._connection() as conn:
                cursor: Cursor = conn.execute(self.sql(text), params, binary=binary or None)
                return cursor
        except self._psycopg.Error as e:
            raise StoreError(f"{self.describe()}: {str(e).strip()}") from None

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        try:
            with self._connection() as conn, conn.cursor() as cursor:
                cursor.executemany(self.sql(text), rows)
        except self._psycopg.Error as e:
            raise StoreError(f"{self.describe()}: {str(e).strip()}") from None

    def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
             types: Sequence[str] | None = None) -> None:
        """COPY rows in (inside the caller's transaction): psycopg writes them in C, many
        times faster than INSERT statements or array parameters for a batch. With the
        columns' `types` (PostgreSQL type names) in binary format, faster still."""
        binary = " (FORMAT BINARY)" if types is not None else ""
        try:
            with self._connection() as conn, conn.cursor() as cursor:
                with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{binary}"
                                 ) as copy:
                    if types is not None:
                        copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
        except self._psycopg.Error as e:
            raise StoreError(f"{self.describe()}: {str(e).strip()}") from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield  # already in one: its statements are ours
            return
        conn = self._acquire()
        self._local.conn = conn
        try:
            with conn.transaction():
                yield
        except self._psycopg.Error as e:
            raise StoreError(f"{self.describe()}: {str(e).strip()}") from None
        finally:
            self._local.conn = None
            self._release(conn)

    def close(self) -> None:
        with self._pool_lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def sqlite_path(url: str) -> Path:
    """sqlite:////var/lib/x.db → /var/lib/x.db; sqlite:///x.db → x.db (relative)."""
    if not url.startswith("sqlite:///"):
        raise StoreError(f"{url}: a SQLite store URL is sqlite:////absolute/path.db "
                         "or sqlite:///relative/path.db")
    rest = url[len("sqlite:///"):]
    if not rest:
        raise StoreError(f"{url}: no file name")
    return Path(rest)


def url_problem(url: str) -> str | None:
    """Why `url` is not a store URL, or None."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        try:
            sqlite_path(url)
        except StoreError as e:
            return str(e)
        return None
    if scheme in ("postgresql", "postgres"):
        return None
    return (f"{url!r}: must be sqlite:////path/to/ratings.db or "
            "postgresql://user@host/dbname")


def open_database(url: str, read_only: bool = False, session: Sequence[str] = ()
                  ) -> Database:
    """`session`: PostgreSQL statements each connection runs first (PostgresDatabase)."""
    why = url_problem(url)
    if why:
        raise StoreError(why)
    if url.startswith("sqlite:"):
        return SqliteDatabase(url, read_only)
    return PostgresDatabase(url, read_only, session)


def as_day(value: Any) -> date:
    """A date column as a date, whichever dialect read it."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def as_time(value: Any) -> datetime:
    """A UTC time column as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
