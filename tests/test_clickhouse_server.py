"""The embedded ClickHouse endpoint, driven by the unchanged clients: urllib/curl and
clickhouse-connect against a real server process on a free loopback port (no mocks)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
import lz4.frame
import pandas as pd
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.summary import QuerySummary

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ["id", "name", "is_deleted", "lsn"]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, always direct


@dataclass
class Server:
    port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    data_dir: Path, log_path: Path, timeout: float = 30.0, options: tuple[str, ...] = ()
) -> tuple[Server, float]:
    """Start the endpoint (`python -m cdc_kit.services.clickhouse_server`); returns it and the
    seconds until /ping answered.

    TZ is set to a non-UTC zone to show the server reports UTC regardless.
    """
    port = free_port()
    began = time.monotonic()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cdc_kit.services.clickhouse_server", "--port", str(port)]
            + ["--data-dir", str(data_dir), *options],
            cwd=REPO,
            env={**os.environ, "TZ": "Europe/Berlin"},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    server = Server(port, data_dir, log_path, process)
    while time.monotonic() - began < timeout:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {log_path.read_text()}")
        try:
            if http(server, "/ping")[2] == b"Ok.\n":
                return server, time.monotonic() - began
        except OSError:
            time.sleep(0.02)
    stop_server(server)
    pytest.fail(f"server did not answer /ping within {timeout} s: {log_path.read_text()}")


def stop_server(server: Server, timeout: float = 10.0) -> int:
    """SIGTERM, then wait; kill only if it hangs (the test then fails on the return code)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        return -9


def http(
    server: Server,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one plain HTTP request, errors included."""
    request = urllib.request.Request(
        server.url + path, data=data, headers=headers or {}, method=method
    )
    try:
        with NO_PROXY.open(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def sql_url(sql: str, **params: str) -> str:
    return "/?" + urllib.parse.urlencode({"query": sql, **params})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("chdb_server")
    running, _ = start_server(root / "data", root / "server.log")
    yield running
    assert stop_server(running) == 0, running.log_path.read_text()


@pytest.fixture()
def client(server: Server) -> Any:
    return clickhouse_connect.get_client(host="127.0.0.1", port=server.port)


@pytest.fixture()
def table(client: Any) -> str:
    """A fresh ReplacingMergeTree table in `local`, the shape the router writes."""
    name = f"local.t_{uuid.uuid4().hex[:8]}"
    client.command(
        f"CREATE TABLE {name} (id UInt64, name String, is_deleted UInt8, lsn UInt64) "
        "ENGINE = ReplacingMergeTree(lsn, is_deleted) ORDER BY id"
    )
    return name


def count(client: Any, sql: str, **kwargs: Any) -> int:
    return client.query(sql, **kwargs).result_rows[0][0]


# ---- plain HTTP (curl) -------------------------------------------------------------------
def test_plain_http_answers_like_clickhouse(server: Server) -> None:
    status, headers, body = http(server, "/?query=SELECT+1")
    assert (status, body) == (200, b"1\n")
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["X-ClickHouse-Timezone"] == "UTC"  # although the server runs with TZ=Berlin
    assert http(server, "/ping")[::2] == (200, b"Ok.\n")
    assert http(server, "/")[::2] == (200, b"Ok.\n")
    assert http(server, "/", method="HEAD")[0] == 200
    assert http(server, "/", method="OPTIONS")[0] == 204
    assert http(server, "/nowhere")[0] == 404
    status, _, body = http(server, "/", data=b"SELECT 40 + 2 AS x FORMAT JSONEachRow")
    assert (status, json.loads(body)) == (200, {"x": 42})
    status, _, body = http(server, sql_url("SELECT 'a' AS x", default_format="CSVWithNames"))
    assert body == b'"x"\n"a"\n'


def test_errors_carry_the_clickhouse_code(server: Server, client: Any) -> None:
    with pytest.raises(DatabaseError) as raised:
        client.query("SELEC 1")
    assert "Code: 62" in str(raised.value)
    assert "SYNTAX_ERROR" in str(raised.value)
    status, headers, body = http(server, sql_url("SELECT * FROM local.no_such_table"))
    assert status == 404  # ClickHouse's status for UNKNOWN_TABLE
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:")
    assert http(server, sql_url("SELECT 1 FORMAT DataFrame"))[0] == 404  # chDB-only format
    assert client.command("SELECT 7") == 7  # still serving


# ---- clickhouse-connect ------------------------------------------------------------------
def test_replacing_merge_tree_with_and_without_final(client: Any, table: str) -> None:
    client.insert(table, [[1, "a", 0, 1]], column_names=COLUMNS)
    client.insert(table, [[1, "b", 0, 2]], column_names=COLUMNS)  # separate INSERT: kept apart
    client.insert(table, [[2, "x", 0, 1]], column_names=COLUMNS)
    frame = pd.DataFrame({"id": [2, 3], "name": ["y", "z"], "is_deleted": [0, 1], "lsn": [2, 1]})
    client.insert_df(table, frame)

    assert count(client, f"SELECT count() FROM {table}") == 5
    assert count(client, f"SELECT count() FROM {table} FINAL") == 2  # id 3 is deleted
    assert count(client, f"SELECT count() FROM {table}", settings={"final": 1}) == 2
    assert count(client, f"SELECT count() FROM {table}") == 5  # the setting did not stick
    final = client.query_df(f"SELECT id, name FROM {table} FINAL ORDER BY id")
    assert final.to_dict("list") == {"id": [1, 2], "name": ["b", "y"]}
    assert client.query_arrow(f"SELECT * FROM {table}").num_rows == 5


def test_a_statement_without_rows_answers_a_query_summary(server: Server, client: Any) -> None:
    dropped = client.command("DROP TABLE IF EXISTS local.never_made")
    assert isinstance(dropped, QuerySummary), dropped
    assert dropped.query_id()  # as a ClickHouse server reports it
    table = f"local.t_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE TABLE {table} (id UInt64) ENGINE = MergeTree ORDER BY id")
    inserted = client.command(f"INSERT INTO {table} VALUES (1), (2)")
    assert isinstance(inserted, QuerySummary) and inserted.written_rows == 2
    assert client.insert(table, [[3]], column_names=["id"]).written_rows == 1
    assert client.command(f"SELECT count() FROM {table}") == 3  # rows still come back as rows
    assert client.command("SELECT 1 WHERE 0") == ""  # an empty result is still a result
    assert client.command("-- the total\n SELECT 1") == 1
    status, headers, body = http(server, sql_url(f"DROP TABLE {table}", query_id="drop-1"))
    assert (status, body) == (200, b"")
    assert "X-ClickHouse-Format" not in headers  # ClickHouse names a format only for rows
    assert headers["X-ClickHouse-Query-Id"] == "drop-1"
    assert json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "0"


FAILS_MIDWAY = (  # fails in block 51 of 100, after 50 blocks of rows were made
    "SELECT number, throwIf(number = 50000) FROM numbers(100000) SETTINGS max_block_size = 1000"
)


def test_a_query_failing_midway_answers_with_its_error_only(server: Server) -> None:
    status, headers, body = http(server, sql_url(FAILS_MIDWAY))
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "395"), body[:200]
    assert body.startswith(b"Code: 395. DB::Exception:")  # no rows before the error
    session = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, session_id=uuid.uuid4().hex
    )  # one session, one chDB connection: the next requests meet what the failure left
    reads: list[Any] = [
        session.query,
        session.query_df,
        session.query_arrow,
        lambda sql: list(session.query_row_block_stream(sql)),
    ]
    for read in reads:
        with pytest.raises(DatabaseError) as raised:
            read(FAILS_MIDWAY)
        assert raised.value.code == 395
        assert session.command("SELECT 1") == 1  # chDB would have put the rows made before
        assert isinstance(session.command("DROP TABLE IF EXISTS local.x"), QuerySummary)
    too_many = "SELECT number FROM numbers(100000)"
    with pytest.raises(DatabaseError) as raised:  # a limit that throws is an error too
        session.query(too_many, settings={"max_result_rows": 1000})
    assert raised.value.code == 396  # TOO_MANY_ROWS_OR_BYTES
    cut = session.query(
        too_many, settings={"max_result_rows": 1000, "result_overflow_mode": "break"}
    )
    assert 1000 <= cut.row_count < 100_000  # 'break' asks for the first rows: 200, as ClickHouse


def test_temporary_tables_stay_in_their_session(server: Server) -> None:
    def connect(**kwargs: Any) -> Any:
        return clickhouse_connect.get_client(host="127.0.0.1", port=server.port, **kwargs)

    mine, other = connect(session_id=uuid.uuid4().hex), connect(session_id=uuid.uuid4().hex)
    plain = connect(autogenerate_session_id=False)
    mine.command("CREATE TEMPORARY TABLE scratch (x UInt8)")
    mine.command("INSERT INTO scratch VALUES (7)")
    assert mine.command("SELECT x FROM scratch") == 7
    for stranger in (other, plain):
        with pytest.raises(DatabaseError) as raised:
            stranger.command("SELECT x FROM scratch")
        assert raised.value.code == 60  # UNKNOWN_TABLE
    other.command("CREATE TEMPORARY TABLE scratch (x UInt8)")  # its own, same name
    assert other.command("SELECT count() FROM scratch") == 0
    plain.command("CREATE TEMPORARY TABLE once (x UInt8)")  # without a session: one request
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        plain.command("SELECT x FROM once")
    assert mine.command("SELECT x FROM scratch") == 7


def test_one_session_used_by_two_requests_at_once_is_refused(server: Server) -> None:
    shared_id = uuid.uuid4().hex

    def connect(session_id: str) -> Any:
        return clickhouse_connect.get_client(
            host="127.0.0.1", port=server.port, session_id=session_id
        )

    first, second, elsewhere = connect(shared_id), connect(shared_id), connect(uuid.uuid4().hex)
    first.command("SET final = 1")
    marker = f"slow_{uuid.uuid4().hex}"
    slow = threading.Thread(target=first.command, args=(f"SELECT sleep(2) AS {marker}",))
    slow.start()
    running = f"SELECT count() FROM system.processes WHERE query LIKE '%AS {marker}'"
    while not elsewhere.command(running):  # another session is served meanwhile
        assert slow.is_alive(), "the slow query ended before it was seen running"
    with pytest.raises(DatabaseError) as raised:
        second.command("SELECT 1")
    assert raised.value.code == 373 and "SESSION_IS_LOCKED" in str(raised.value)
    assert slow.is_alive()  # refused at once, not after waiting for the first request
    slow.join()
    assert second.command("SELECT toUInt8(getSetting('final'))") == 1  # one session, free again
    assert http(server, sql_url("SELECT 1", session_id=shared_id))[::2] == (200, b"1\n")


def test_a_long_query_can_be_killed_from_another_client(server: Server, client: Any) -> None:
    marker = f"long_{uuid.uuid4().hex}"
    failures: list[DatabaseError] = []

    def long_query() -> None:
        try:
            client.command(f"SELECT count() FROM numbers(1e12) WHERE number >= 0 AS {marker}")
        except DatabaseError as exc:
            failures.append(exc)

    worker = threading.Thread(target=long_query)
    worker.start()
    other = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    kill = f"KILL QUERY WHERE query LIKE '%AS {marker}' AND query NOT LIKE 'KILL%' SYNC"
    while not other.query(kill).result_rows:  # until the long query had started
        assert worker.is_alive(), "the long query ended by itself"
    worker.join(60)
    assert [exc.code for exc in failures] == [394]  # QUERY_WAS_CANCELLED


def test_a_large_insert_arrives_whole(client: Any, table: str) -> None:
    rows = [[i, f"name {i}", 0, 1] for i in range(100_000)]
    summary = client.insert(table, rows, column_names=COLUMNS)  # several lz4 frames
    assert summary.written_rows == 100_000
    assert count(client, f"SELECT count() FROM {table}") == 100_000
    assert count(client, f"SELECT sum(id) FROM {table}") == sum(range(100_000))


def test_server_side_and_client_side_parameters(client: Any) -> None:
    text = "it's a\ttab and a \\ backslash"
    result = client.query("SELECT {x:Int64} + 1, {s:String}", parameters={"x": 41, "s": text})
    assert result.result_rows == [(42, text)]
    result = client.query("SELECT %(x)s + 1, %(s)s", parameters={"x": 41, "s": text})
    assert result.result_rows == [(42, text)]


def test_database_of_the_client_resolves_unqualified_names(
    server: Server, client: Any, table: str
) -> None:
    client.insert(table, [[1, "a", 0, 1]], column_names=COLUMNS)
    local = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, database="local")
    unqualified = table.split(".", 1)[1]
    assert count(local, f"SELECT count() FROM {unqualified}") == 1
    local.insert(unqualified, [[2, "b", 0, 1]], column_names=COLUMNS)
    assert client.command("SELECT currentDatabase()") == "default"  # no leak to other clients
    assert local.command("SELECT currentDatabase()") == "local"
    with pytest.raises(DatabaseError, match="UNKNOWN_TABLE"):
        client.query(f"SELECT count() FROM {unqualified}")


def test_set_and_use_stay_in_their_session(server: Server, table: str) -> None:
    def connect(**kwargs: Any) -> Any:
        return clickhouse_connect.get_client(host="127.0.0.1", port=server.port, **kwargs)

    mine, other = connect(session_id=uuid.uuid4().hex), connect(session_id=uuid.uuid4().hex)
    plain = connect(autogenerate_session_id=False)
    mine.insert(table, [[1, "a", 0, 1]], column_names=COLUMNS)
    mine.insert(table, [[1, "b", 0, 2]], column_names=COLUMNS)
    mine.command("SET final = 1")
    assert count(other, f"SELECT count() FROM {table}") == 2  # asked right after: no leak
    assert count(mine, f"SELECT count() FROM {table}") == 1
    mine.command("USE local")
    assert other.command("SELECT currentDatabase()") == "default"
    assert mine.command("SELECT currentDatabase()") == "local"
    plain.command("SET final = 1")  # no session: like ClickHouse, lasts for this request only
    assert count(plain, f"SELECT count() FROM {table}") == 2
    assert count(mine, f"SELECT count() FROM {table}") == 1
    assert count(mine, f"SELECT count() FROM {table}", settings={"final": 0}) == 2


def test_compressed_request_bodies(server: Server, table: str) -> None:
    # Distinct ids everywhere: the table is a ReplacingMergeTree, and a background merge may
    # collapse equal keys at any moment (count() without FINAL would then see fewer rows).
    for n, codec in enumerate(("gzip", "zstd", "lz4")):
        writer = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, compress=codec)
        rows = [[n * 20_000 + i, codec, 0, 1] for i in range(20_000)]
        assert writer.insert(table, rows, column_names=COLUMNS).written_rows == 20_000
    insert = sql_url(f"INSERT INTO {table} FORMAT CSV")
    csvs = [b"".join(f"{k}{i:04},raw,0,1\n".encode() for i in range(1000)) for k in (7, 8, 9)]
    frames = lz4.frame.compress(csvs[0][:5000]) + lz4.frame.compress(csvs[0][5000:])
    for encoding, body in [
        ("lz4", frames),
        ("gzip", gzip.compress(csvs[1])),
        ("deflate", zlib.compress(csvs[2])),
    ]:
        status, _, answer = http(server, insert, body, {"Content-Encoding": encoding})
        assert status == 200, answer
    totals = writer.query(f"SELECT countIf(name = 'raw'), count() FROM {table}").result_rows
    assert totals == [(3000, 63_000)]
    status, headers, _ = http(server, insert, b"not lz4 at all", {"Content-Encoding": "lz4"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "271")  # CANNOT_DECOMPRESS


def test_bad_input_gets_an_answer_and_the_server_survives(server: Server, table: str) -> None:
    status, headers, body = http(server, sql_url(f"INSERT INTO {table} FORMAT Native"), b"junk")
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "33", body
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # body never completed
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nSELECT")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413") and b"Connection: close" in answer
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"\x16\x03\x01garbage\r\n\r\n")  # e.g. a TLS hello: the stdlib refuses it
        assert b"400" in sock.recv(65536)
    status, headers, _ = http(server, sql_url("SELECT 1", readonly="1"))
    assert headers["X-ClickHouse-Exception-Code"] == "164"  # refused: it would lock everyone
    assert http(server, sql_url(f"INSERT INTO {table} VALUES (9, 'ok', 0, 1)"))[0] == 200
    assert http(server, sql_url(f"SELECT count() FROM {table}"))[2] == b"1\n"


CONCURRENT_CLIENT = """
import sys, clickhouse_connect
port, table, offset = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
client = clickhouse_connect.get_client(host="127.0.0.1", port=port)
mine = f"SELECT count() FROM {table} WHERE id >= %(offset)s AND id < %(offset)s + 1000000"
for batch in range(20):
    start = offset + batch * 500
    rows = [[i, "p", 0, 1] for i in range(start, start + 500)]
    client.insert(table, rows, column_names=["id", "name", "is_deleted", "lsn"])
    seen = client.query(mine, parameters={"offset": offset}).result_rows[0][0]
    assert seen == (batch + 1) * 500, seen
"""


def test_two_client_processes_at_once(server: Server, client: Any, table: str) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_CLIENT, str(server.port), table, str(offset)],
            stderr=subprocess.PIPE,
        )
        for offset in (0, 1_000_000)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr.decode()
    assert count(client, f"SELECT count() FROM {table}") == 20_000
    assert count(client, f"SELECT uniqExact(id) FROM {table}") == 20_000


def test_the_log_has_no_line_per_request(server: Server) -> None:
    http(server, "/?query=SELECT+1")
    lines = server.log_path.read_text().splitlines()
    assert any("listening on http://127.0.0.1" in line for line in lines)
    assert not [line for line in lines if "GET /" in line or "POST /" in line]


# ---- lifecycle -----------------------------------------------------------------------------
def test_a_query_beyond_the_memory_cap_fails_alone(tmp_path: Path) -> None:
    capped, _ = start_server(
        tmp_path / "data", tmp_path / "server.log", options=("--max-memory-mb", "100")
    )
    try:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=capped.port)
        with pytest.raises(DatabaseError) as raised:
            client.command("SELECT length(groupArray(number)) FROM numbers(50000000)")
        assert raised.value.code == 241  # MEMORY_LIMIT_EXCEEDED, not a killed server
        assert client.command("SELECT length(groupArray(number)) FROM numbers(1000)") == 1000
    finally:
        assert stop_server(capped) == 0


def test_data_survives_a_restart_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    first, startup = start_server(tmp_path / "data", tmp_path / "server.log")
    assert startup < 15, f"first /ping after {startup:.1f} s"
    try:
        http(first, "/", b"CREATE TABLE local.kept (id UInt64) ENGINE = MergeTree ORDER BY id")
        http(first, "/", b"INSERT INTO local.kept SELECT number FROM numbers(10)")
        rival = subprocess.run(  # one process per data folder: a second one must give up
            [sys.executable, "-m", "cdc_kit.services.clickhouse_server", "--port", str(free_port())]
            + ["--data-dir", str(first.data_dir)],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert rival.returncode == 1 and b"cannot start" in rival.stderr, rival.stderr
    finally:
        began = time.monotonic()
        assert stop_server(first) == 0, first.log_path.read_text()
    assert time.monotonic() - began < 5
    second, _ = start_server(tmp_path / "data", tmp_path / "server.log")  # the lock was released
    try:
        assert http(second, sql_url("SELECT count() FROM local.kept"))[2] == b"10\n"
    finally:
        assert stop_server(second) == 0
    assert "stopped" in first.log_path.read_text()


CLOSE_UNDER_A_REQUEST = """
import sys, threading, time
from pathlib import Path
from cdc_kit.services.clickhouse_server.engine import ChdbEngine
from cdc_kit.services.clickhouse_server.requests import Request
engine = ChdbEngine(Path(sys.argv[1]))
answers = []
worker = threading.Thread(target=lambda: answers.append(engine.run(Request("SELECT sleep(1)"))))
worker.start()
while engine._in_use == 0:
    time.sleep(0.01)
print("closed at once:", engine.close(timeout=0.1), "released:", engine.released, flush=True)
worker.join()
print("answer:", answers[0].data, "released:", engine.released, flush=True)
"""


def test_closing_never_closes_a_connection_a_request_still_uses(tmp_path: Path) -> None:
    """close() gives up waiting after its timeout, but leaves the running request its
    connection; the request answers, and the last one out releases the folder."""
    ran = subprocess.run(
        [sys.executable, "-c", CLOSE_UNDER_A_REQUEST, str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        "closed at once: False released: False",
        "answer: b'0\\n' released: True",
    ]


def test_credentials_are_checked_before_the_body_is_read(tmp_path: Path) -> None:
    """A stranger announcing 200 MB is refused at once, its body never read, and the
    connection is closed (the unread body would otherwise be read as the next request)."""
    lab = tmp_path / "lab.json"
    lab.write_text(json.dumps({"clickhouse_user": "lab", "clickhouse_password": "secret"}))
    running, _ = start_server(
        tmp_path / "data", tmp_path / "server.log", options=("--credentials-file", str(lab))
    )
    try:
        assert http(running, "/ping")[2] == b"Ok.\n"  # a health check needs no user
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(
                b"POST /?query=INSERT+INTO+t+FORMAT+Native HTTP/1.1\r\nHost: x\r\n"
                b"X-ClickHouse-User: lab\r\nX-ClickHouse-Key: wrong\r\n"
                b"Content-Length: 200000000\r\n\r\n" + b"x" * 1000
            )
            began = time.monotonic()
            answer = sock.recv(65536).decode("latin-1")
            waited = time.monotonic() - began
        assert answer.startswith("HTTP/1.1 401"), answer
        assert "X-ClickHouse-Exception-Code: 516" in answer and "Connection: close" in answer
        assert waited < 2, "answered without waiting for the body"
        status, _, _ = http(
            running, sql_url("SELECT 1"), headers={"X-ClickHouse-User": "lab",
                                                   "X-ClickHouse-Key": "secret"},
        )  # fmt: skip
        assert status == 200
    finally:
        assert stop_server(running) == 0, running.log_path.read_text()
