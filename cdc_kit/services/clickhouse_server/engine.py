"""The chDB engine over one data folder, lending a connection to each request: a client's
`session_id` gets one of its own (its SETs, USE and temporary tables), other requests borrow a
pooled one."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdc_kit.services.clickhouse_server.protocol import (
    READONLY,
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    SESSION_TIMEOUT,
    STD_EXCEPTION,
    UNKNOWN_SETTING,
    RequestError,
    engine_error,
    make_summary,
    quote_identifier,
    quote_string,
)
from cdc_kit.services.clickhouse_server.requests import (
    Request,
)

log = logging.getLogger("cdc_kit.services.clickhouse_server")


#: Each session holds a chDB connection (~0.1 MB); beyond this many the least recently used
#: idle session is closed.
MAX_SESSIONS = 100


#: Cache sizes for the chDB engine (ClickHouse server settings, bytes). ClickHouse sizes its
#: caches for a server with many GB (5 GiB of marks); the kit's tables are small, so these
#: caps cost no speed and keep the lab inside Binder's 2 GB.
ENGINE_SETTINGS = {
    "mark_cache_size": 64 << 20,
    "primary_index_cache_size": 64 << 20,
    "index_mark_cache_size": 16 << 20,
    "query_condition_cache_size": 16 << 20,
    "compiled_expression_cache_size": 16 << 20,
}


#: Memory all queries together may use; beyond it a query fails with MEMORY_LIMIT_EXCEEDED
#: (code 241) instead of the whole lab being killed for lack of memory.
MAX_MEMORY_MB = 1024


#: Connections kept open for requests without a session_id.
MAX_IDLE_CONNECTIONS = 4


_SET = re.compile(r"^\s*SET\s+(?!ROLE\b|DEFAULT\s+ROLE\b|TRANSACTION\b)", re.IGNORECASE)


_USE = re.compile(r"^\s*USE\s", re.IGNORECASE)


_READONLY = re.compile(r"\breadonly\b", re.IGNORECASE)


_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_TEMPORARY = re.compile(r"\bTEMPORARY\b", re.IGNORECASE)


# Statements whose answer is a result set (ClickHouse: a pipeline that outputs rows), after
# any leading comments or brackets.
_RESULT_STATEMENT = re.compile(
    r"^(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*.*?\*/|\()*"
    r"(?:SELECT|WITH|FROM|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|CHECK|KILL|WATCH|BACKUP|RESTORE)\b",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class Answer:
    """What one statement gave back: its bytes, ClickHouse's summary, and whether it made a
    result set (ClickHouse then names the format; clickhouse-connect's command() reads that)."""

    data: bytes = b""
    summary: dict[str, str] = field(default_factory=dict)
    is_result_set: bool = False


def returns_rows(sql: str) -> bool:
    """Does the statement make a result set (perhaps empty), rather than just do something?"""
    return _RESULT_STATEMENT.match(sql) is not None


@dataclass
class ClientSession:
    """A client's `session_id`: a chDB connection of its own, so its SETs, USE and temporary
    tables stay its own; `busy` while one of its requests runs (a second one is refused)."""

    connection: ChdbConnection | None = None
    busy: bool = False
    timeout: float = SESSION_TIMEOUT
    expires: float = 0.0


class ChdbConnection:
    """One chDB connection and the state this server gave it.

    chDB keeps settings, the current database and temporary tables per connection. URL
    settings and `database` last one request, so each request first brings the connection to
    what it asks for (its session's SETs and USE, then its URL settings), changing only what
    differs from the previous request on this connection.
    """

    def __init__(self, session: Any, baseline: dict[str, str]) -> None:
        self._session = session
        self._baseline = baseline  # settings chDB starts with changed; resetting goes back there
        self._database = "default"
        self._applied: dict[str, str] = {}  # settings we changed, and their values now
        self.kept_settings: dict[str, str] = {}  # its client session's SETs
        self.kept_database: str | None = None  # and USE

    def close(self) -> None:
        self._session.close()

    def run(self, request: Request) -> Answer:
        """Run one request's statement on this connection (never two at once)."""
        keep = request.session_id is not None
        self.use(request.database or self.kept_database or "default")
        if _SET.match(request.sql):
            return self._run_set(request.sql, keep)
        if _USE.match(request.sql):
            return self._run_use(request.sql, keep)
        self._sync_settings({**self.kept_settings, **request.settings})
        if request.insert_data is not None:
            return self._insert(request.sql, request.fmt, request.insert_data)
        return self._query(request)

    # -- statements
    def _query(self, request: Request) -> Answer:
        # The whole result is built before the first byte is sent: a query that fails midway
        # answers with its error, never with the rows it had made so far.
        result = self.call(request.sql, request.fmt, request.params)
        data = result.bytes() or b""
        summary = make_summary(
            read_rows=result.rows_read(),
            read_bytes=result.bytes_read(),
            written_rows=result.rows_written(),
            written_bytes=result.bytes_written(),
            result_bytes=len(data),
            elapsed=result.elapsed(),
        )
        return Answer(data, summary, is_result_set=bool(data) or returns_rows(request.sql))

    def _insert(self, statement: str, fmt: str, data: bytes) -> Answer:
        began = time.perf_counter()  # chDB's own insert `elapsed` adds up over the connection
        try:
            inserter = self._session.send_insert(statement, fmt)
        except RuntimeError as exc:  # chDB's ChdbError, for SQL errors
            raise engine_error(exc) from None
        try:
            if data:
                inserter.append(data)
            result = inserter.finish()
        except RuntimeError as exc:
            with contextlib.suppress(RuntimeError):  # the insert's own error is the one to report
                inserter.cancel()
            raise engine_error(exc) from None
        summary = make_summary(
            written_rows=result.rows_written,
            written_bytes=result.bytes_written,
            elapsed=time.perf_counter() - began,
        )
        return Answer(b"", summary)

    def _run_set(self, sql: str, keep: bool) -> Answer:
        """Run a SET; keep what it changed for its session (none: the next request undoes it)."""
        if _READONLY.search(sql):
            raise RequestError(_READONLY_REFUSAL, READONLY)
        self._sync_settings(dict(self.kept_settings))
        before = self.settings()
        self.call(sql)
        changed = {k: v for k, v in self.settings().items() if before.get(k) != v}
        self._applied.update(changed)
        if keep:
            self.kept_settings.update(changed)
        return Answer(b"", make_summary())

    def _run_use(self, sql: str, keep: bool) -> Answer:
        self.call(sql)
        self._database = self.scalar("SELECT currentDatabase()")
        if keep:
            self.kept_database = self._database
        return Answer(b"", make_summary())

    # -- connection state
    def use(self, database: str) -> None:
        if database != self._database:
            self.call(f"USE {quote_identifier(database)}")
            self._database = database

    def _sync_settings(self, wanted: dict[str, str]) -> None:
        """Bring the connection to this request's settings, changing only the difference."""
        for name in [name for name in self._applied if name not in wanted]:
            if name in self._baseline:
                self.call(f"SET {name} = {quote_string(self._baseline[name])}")
            else:
                self.call(f"SET {name} = DEFAULT")
            del self._applied[name]
        for name, value in wanted.items():
            if self._applied.get(name) == value:
                continue
            if name.lower() == "readonly":
                raise RequestError(_READONLY_REFUSAL, READONLY)
            if not _SETTING_NAME.match(name):
                raise RequestError(f"Unknown setting '{name}'", UNKNOWN_SETTING)
            self.call(f"SET {name} = {quote_string(value)}")
            self._applied[name] = value

    # -- chDB calls
    def call(
        self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None
    ) -> Any:
        try:
            return self._session.query(sql, fmt, params=params or None)
        except RuntimeError as exc:  # chDB's ChdbError, for SQL errors
            self._discard_leftover()
            raise engine_error(exc) from None

    def _discard_leftover(self) -> None:
        """chDB 4.4 keeps the output a failed query had already made and puts it in front of
        the next answer on this connection (measured: 370 kB before `SELECT 1`'s `1`).
        One throwaway query takes it."""
        with contextlib.suppress(RuntimeError):  # nothing to take, or the connection is gone
            self._session.query("SELECT 1", "TabSeparated")

    def scalar(self, sql: str) -> str:
        return json.loads(self.call(sql, "JSONCompact").bytes())["data"][0][0]

    def settings(self, where: str = "") -> dict[str, str]:
        """name -> value of the connection's settings (read at start and around SETs)."""
        sql = f"SELECT name, value FROM system.settings {where}"  # noqa: S608 - constant text
        rows = json.loads(self.call(sql, "JSONCompact").bytes())["data"]
        return {name: value for name, value in rows if name != "database"}


class ChdbEngine:
    """The chDB engine over one data folder, lending a connection to each request.

    A client `session_id` gets a connection of its own, as a ClickHouse session owns its
    context; a second request of that session while one runs is refused (SESSION_IS_LOCKED).
    Requests without a session borrow a pooled connection, and a connection that made a
    temporary table is closed after the request, since the table belongs to that request only.
    Different connections run their queries at the same time.
    """

    def __init__(self, data_dir: Path, max_memory_mb: int = MAX_MEMORY_MB) -> None:
        import chdb.session  # here, not at import: main() sets TZ before chDB starts

        if "?" in str(data_dir):
            raise ValueError(f"the data folder's path must not contain '?': {data_dir}")
        data_dir.mkdir(parents=True, exist_ok=True)
        engine = {**ENGINE_SETTINGS, "max_server_memory_usage": max_memory_mb << 20}
        self._address = f"{data_dir}?" + "&".join(f"{k}={v}" for k, v in engine.items())
        self._connect_chdb = chdb.session.Session
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)
        self.closed = False
        self.released = False  # the folder is let go (the anchor closed)
        self._idle: list[ChdbConnection] = []  # for requests without a session
        self._sessions: OrderedDict[str, ClientSession] = OrderedDict()
        self._in_use = 0
        # The first connection holds the folder until close(): chDB lets it go with the last one.
        self._anchor = ChdbConnection(self._connect_chdb(self._address), {})
        try:
            self._anchor.call("CREATE DATABASE IF NOT EXISTS local")  # cdc-kit's warehouse database
            self.timezone = self._anchor.scalar("SELECT timezone()")
            self.version = self._anchor.scalar("SELECT version()")
            self._baseline = self._anchor.settings("WHERE changed")
        except BaseException:
            self._anchor.close()  # release the folder's lock
            raise

    def close(self, timeout: float = 10.0) -> bool:
        """Close every connection no request uses, wait up to `timeout` for the running ones,
        and release the folder. True if released now; False if requests still run: a
        connection in use is never closed under them, and the last one out releases it."""
        with self._lock:
            if self.closed:
                return self.released
            self.closed = True
            idle = self._idle + [
                kept.connection
                for kept in self._sessions.values()
                if kept.connection is not None and not kept.busy
            ]
            self._idle = []
            self._sessions.clear()  # busy ones close their connection when they return it
        for connection in idle:
            connection.close()
        with self._lock:
            if not self._returned.wait_for(lambda: self._in_use == 0, timeout):
                return False
        self._release()
        return True

    def _release(self) -> None:
        """Close the first connection, which holds the folder (once, whoever gets here first)."""
        with self._lock:
            if self.released:
                return
            self.released = True
        self._anchor.close()

    def run(self, request: Request) -> Answer:
        """Run one request's statement on the connection of its session (or a pooled one)."""
        connection, session = self._borrow(request)
        reusable = session is not None or not _TEMPORARY.search(request.sql)
        try:
            return connection.run(request)
        finally:
            self._give_back(connection, session, reusable)

    def _borrow(self, request: Request) -> tuple[ChdbConnection, ClientSession | None]:
        with self._lock:
            if self.closed:
                raise RequestError("The server is shutting down", STD_EXCEPTION)
            now = time.monotonic()
            for key in [key for key, kept in self._sessions.items() if kept.expires < now]:
                self._drop_session(key)  # idle too long: its connection and tables go
            session = self._client_session(request, now)
            if session is not None:
                connection = session.connection
            else:
                connection = self._idle.pop() if self._idle else None
            self._in_use += 1
        if connection is None:
            try:
                connection = ChdbConnection(self._connect_chdb(self._address), self._baseline)
            except RuntimeError as exc:
                self._give_back(None, session, reusable=False)
                raise engine_error(exc) from None
            except BaseException:
                self._give_back(None, session, reusable=False)
                raise
            if session is not None:
                session.connection = connection
        return connection, session

    def _give_back(
        self, connection: ChdbConnection | None, session: ClientSession | None, reusable: bool
    ) -> None:
        with self._lock:
            self._in_use -= 1
            if session is not None:
                session.busy = False
                session.expires = time.monotonic() + session.timeout
                if not self.closed:
                    connection = None  # it stays with its session
            elif (
                connection is not None
                and reusable
                and not self.closed
                and len(self._idle) < MAX_IDLE_CONNECTIONS
            ):
                self._idle.append(connection)
                connection = None
            last_out_after_close = self.closed and self._in_use == 0
            self._returned.notify_all()
        if connection is not None:
            connection.close()
        if last_out_after_close:
            self._release()  # close() gave up waiting: the last request out lets the folder go

    def _client_session(self, request: Request, now: float) -> ClientSession | None:
        """The session of `session_id` (made on first use), now marked busy; None without a
        session_id. Runs under the lock."""
        if not request.session_id:
            return None
        session = self._sessions.get(request.session_id)
        if session is None:
            if request.session_check:
                raise RequestError(f"Session {request.session_id} not found", SESSION_NOT_FOUND)
            session = self._sessions[request.session_id] = ClientSession()
            for key in list(self._sessions)[: max(0, len(self._sessions) - MAX_SESSIONS)]:
                self._drop_session(key)  # the longest unused go first
        elif session.busy:
            raise RequestError(
                f"Session {request.session_id} is locked by a concurrent client.",
                SESSION_IS_LOCKED,
            )
        self._sessions.move_to_end(request.session_id)
        session.busy = True
        session.timeout = request.session_timeout
        session.expires = now + session.timeout
        return session

    def _drop_session(self, key: str) -> None:
        session = self._sessions[key]
        if session.busy:
            return  # a running request keeps it
        del self._sessions[key]
        if session.connection is not None:
            session.connection.close()


_READONLY_REFUSAL = (
    "cdc-kit's embedded ClickHouse cannot apply 'readonly': chDB could never switch it off "
    "again on the connection that serves the request"
)

