"""The embedded ClickHouse: chDB behind (enough of) the ClickHouse HTTP interface.

chDB is ClickHouse as a library, and only one process may open a data folder. Notebooks, the
router and tests are separate processes, so this one server owns the folder and everyone else
uses the official `clickhouse-connect` client (or curl) over HTTP, as against a real server.

    python -m cdc_kit.services.clickhouse_server --port 18123 --data-dir .cdc_kit/clickhouse/data

What it speaks (docs/clickhouse-endpoint.md lists the limits):
- `GET /ping` and `GET /` answer `Ok.`; SQL comes from `?query=`, the body, or both (the body is
  appended, as ClickHouse does); output format from a trailing `FORMAT x`, else
  `default_format`, else TabSeparated;
- `param_<name>` fills `{name:Type}` placeholders; `database` picks the current database per
  request; every other non-transport URL parameter is a ClickHouse setting for that request;
- `session_id` gives a client a chDB connection of its own: its `SET`, `USE` and temporary
  tables last for its later requests and no one else's, and a second request while one runs is
  refused (SESSION_IS_LOCKED), as in ClickHouse; requests of different sessions run at once;
- statements without rows (DDL, INSERT) answer without `X-ClickHouse-Format`, so
  clickhouse-connect's `command()` returns a QuerySummary, as from ClickHouse;
- INSERT bodies (`INSERT ... FORMAT Native` + data) compressed as lz4 (several frames), zstd,
  gzip or deflate, with Content-Length or chunked;
- errors as ClickHouse sends them: `Code: N. DB::Exception: ...` as the body, the
  `X-ClickHouse-Exception-Code` header, and ClickHouse's HTTP status for that code. Results are
  built whole before they are sent, so a query failing midway never answers with part of its rows.

Security: with `--credentials-file` (the stack always passes the lab's) only that one user is
served, checked before a request's body is read; without it anyone who reaches the port may
ask. The server binds only to the address it is given (the stack passes 127.0.0.1). Never bind
it to a public address: chDB reads and writes local files (`file()`, `INTO OUTFILE`) with this
process's rights.

    protocol   parameters, limits, error codes, the shape of an error
    requests   URL parameters + body -> one statement (formats, INSERT data, compression)
    engine     chDB connections, one per client session
    handler    HTTP: credentials, one request per chDB call, one write per answer
    server     open the folder, bind, serve; `main`
"""

from cdc_kit.services.clickhouse_server.handler import ChdbHTTPServer, Credentials
from cdc_kit.services.clickhouse_server.server import main, make_server

__all__ = ["ChdbHTTPServer", "Credentials", "main", "make_server"]
