"""Engines for SQLite and PostgreSQL, and the two kinds of transaction nurture uses."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.pool import StaticPool

from nurture.database.encode import json_text
from nurture.errors import StorageUnavailable


def _dumps(value: Any) -> str:
    # orjson is several times faster than json.dumps on the ingest hot path.
    return json_text(value)


class Database:
    """Owns the engines. ``begin()`` is a write transaction, ``read()`` a read-only one.

    SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` so two writers queue on the
    busy timeout instead of failing with SQLITE_BUSY when a read lock cannot be upgraded. Reads
    use a second engine with plain ``BEGIN`` so they never wait for the writer (WAL).
    ``synchronous=FULL`` makes every commit durable across a power cut; the cost is paid once
    per commit, which is why ingest shares one commit among concurrent requests.
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout_ms: int = 10_000,
        pool_size: int = 10,
        synchronous: str = "FULL",
        dead_client_seconds: float = 60.0,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.dead_client_seconds = dead_client_seconds
        # Reentrant: a nested write transaction in one thread behaves as it did without it.
        self._writer = threading.RLock()
        self._busy_timeout = busy_timeout_ms / 1000
        self.dialect = "sqlite" if self.is_sqlite else "postgresql"
        # Transactions that failed for want of a database (locked, unreachable): /metrics.
        self.unavailable_errors = 0
        self._errors_lock = threading.Lock()
        if self.is_sqlite:
            memory = url in ("sqlite://", "sqlite:///:memory:")
            kwargs: dict[str, Any] = {
                "connect_args": {"check_same_thread": False},
                "json_serializer": _dumps,
                "json_deserializer": orjson.loads,
            }
            if memory:
                kwargs["poolclass"] = StaticPool
            self.engine = create_engine(url, **kwargs)
            self._sqlite_setup(self.engine, busy_timeout_ms, synchronous, immediate=True)
            if memory:
                self.read_engine = self.engine
            else:
                self.read_engine = create_engine(url, **kwargs)
                self._sqlite_setup(self.read_engine, busy_timeout_ms, synchronous, immediate=False)
        else:
            self.engine = create_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size * 2,
                json_serializer=_dumps,
                json_deserializer=orjson.loads,
            )
            if dead_client_seconds > 0:
                self._end_sessions_of_dead_clients(self.engine, dead_client_seconds)
            _ping_when_in_doubt(self.engine)
            self.read_engine = self.engine

    @staticmethod
    def _end_sessions_of_dead_clients(engine: Engine, seconds: float) -> None:
        sql, values = dead_client_limits(seconds)

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(sql, values)
            dbapi_conn.commit()

    @staticmethod
    def _sqlite_setup(
        engine: Engine, busy_timeout_ms: int, synchronous: str, *, immediate: bool
    ) -> None:
        # Only the benchmark passes anything but FULL, to show what durability costs.
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}")

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # Before WAL and the first table, or a new file keeps auto_vacuum=NONE; an existing
            # file switches at its next VACUUM (``nurture prune --vacuum``; docs/retention.md).
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: commits on success, rolls back on error."""
        if self.is_sqlite:
            # Writers of this process queue here rather than on SQLite's lock, whose busy
            # handler sleeps with backoff (up to 100 ms a try): with ingest, the event processor
            # and the job worker writing in one process, those sleeps made due jobs seconds late
            # (bench/scheduler.py lateness p99 2-5 s under CPU contention, 50 ms with this).
            # Bounded like SQLite's own wait, so a thread waiting on a writer that waits on it
            # gets StorageUnavailable instead of hanging.
            if not self._writer.acquire(timeout=self._busy_timeout):
                self._count_error()
                raise StorageUnavailable("database unavailable: database is locked")
            try:
                with translate_errors(self._count_error), self.engine.begin() as conn:
                    yield conn
            finally:
                self._writer.release()
            return
        with translate_errors(self._count_error), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """PostgreSQL: each statement is its own transaction, durably committed before it
        returns: one round trip, not ``BEGIN``, statement, ``COMMIT`` (for a one-statement
        writer: ingest). SQLite: ``begin()``."""
        if self.is_sqlite:
            with self.begin() as conn:
                yield conn
            return
        with (
            translate_errors(self._count_error),
            self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        ):
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with translate_errors(self._count_error), self.read_engine.connect() as conn:
            yield conn

    def _count_error(self) -> None:
        with self._errors_lock:
            self.unavailable_errors += 1

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


PING_IDLE_SECONDS = 30.0  # a firewall or NAT may drop an idle connection without a word
_CHECKED_IN = "nurture.checked_in"


def _ping_when_in_doubt(engine: Engine) -> None:
    """``pool_pre_ping`` without its ``SELECT 1`` round trip before every transaction. A server
    that restarts, or a terminated backend, sends its error and closes the socket: a pooled
    connection is pinged only if its socket has input waiting while idle, or it was idle over
    ``PING_IDLE_SECONDS``; a failed ping (``DisconnectionError``) makes the pool replace it."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle = time.monotonic() - record.info.get(_CHECKED_IN, 0.0)
        if idle < PING_IDLE_SECONDS and not _has_input(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as err:
            raise exc.DisconnectionError(f"connection failed its ping: {err}") from err

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()


def _has_input(dbapi_conn: Any) -> bool:
    # An idle connection that does not LISTEN is sent nothing unless the server is leaving.
    try:
        if dbapi_conn.closed or dbapi_conn.broken:
            return True
        ready, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
    except (OSError, ValueError, AttributeError):
        return True
    return bool(ready)


def dead_client_limits(seconds: float) -> tuple[str, tuple[str, ...]]:
    """The statement (and its values) that has PostgreSQL end this session if its process
    vanishes (power cut, network cut), releasing its locks.

    Such a host sends no FIN: by default the server keeps its sessions, and the locks of an open
    transaction (event partitions, job and contact rows), for the two hours of the kernel's
    keepalive; other workers skip those partitions and jobs, or wait on those rows, all that
    time. With these limits the server ends the session after about ``seconds``: a transaction
    idle that long (``idle_in_transaction_session_timeout``), data unacknowledged that long
    (``tcp_user_timeout``, e.g. notifications pushed to a dead listener), or an idle connection
    whose keepalives go unanswered. No nurture transaction waits on anything but the database
    between its statements. One round trip per new connection: a startup ``options`` parameter
    would be free but replaces one given in the URL, and PgBouncer refuses it.
    """
    ms = str(int(seconds * 1000))
    idle, interval = str(max(1, int(seconds / 2))), str(max(1, int(seconds / 8)))
    settings = (
        ("idle_in_transaction_session_timeout", ms),
        ("tcp_user_timeout", ms),
        ("tcp_keepalives_idle", idle),
        ("tcp_keepalives_interval", interval),
        ("tcp_keepalives_count", "4"),
    )
    sql = "SELECT " + ", ".join(f"set_config('{name}', %s, false)" for name, _ in settings)
    return sql, tuple(value for _, value in settings)


@contextmanager
def translate_errors(on_error: Callable[[], None] | None = None) -> Iterator[None]:
    """A locked or unreachable database becomes ``StorageUnavailable`` (HTTP 503, sender retries).

    Integrity and programming errors are bugs or conflicts and pass through unchanged.
    """
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError) as err:
        if on_error is not None:
            on_error()
        raise StorageUnavailable(f"database unavailable: {err.orig or err}") from err
