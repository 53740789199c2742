"""Turn decoded pgoutput messages into the kit's message contract, one event per row change.

This is the part of capture with the rules, kept free of I/O so it can be tested on bytes:
- deletes under REPLICA IDENTITY DEFAULT carry only the key: every other column becomes null
  (as Redpanda Connect does); under FULL the old row is sent;
- an update that changes the primary key becomes a delete of the old key, then the new row;
- unchanged TOASTed values are never sent as null: filled from the old row when PostgreSQL
  sent one (FULL), otherwise left out of the payload and named in `unchanged_toast`;
- a transaction's events are released only at its commit (streamed ones at stream commit),
  so a rolled-back transaction emits nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdc_kit import pgoutput
from cdc_kit.capture.row_json import RowWriter
from cdc_kit.contract import OutgoingEvent, build_event, mark_commit


@dataclass
class _Transaction:
    xid: int | None
    commit_ts: datetime | None = None
    events: list[tuple[int | None, OutgoingEvent]] = field(default_factory=list)


class ChangeEventBuilder:
    """Feed it decoded messages in order; it returns the events of each committed transaction.

    `feed(message, lsn)` returns a list of events, non-empty only at a Commit or Stream Commit.
    `lsn` is the XLogData start of the message: the change's own LSN. The builder reads the
    tables' layouts and row values from the `decoder` that decoded the message, so feed each
    message right after `decoder.feed` decoded it.
    """

    def __init__(
        self,
        decoder: pgoutput.Decoder,
        primary_key: Callable[[pgoutput.Relation], list[str]] | None = None,
    ) -> None:
        """`primary_key(relation)` names the table's primary-key columns.

        Relation messages flag the REPLICA IDENTITY columns, which under FULL are all of them;
        capture passes a catalog lookup so keys and primary-key changes are judged correctly.
        """
        self.decoder = decoder
        self._primary_key = primary_key or _identity_columns
        self._keys: dict[int, list[str]] = {}
        self._writers: dict[int, RowWriter] = {}  # relid -> JSON writer of its current layout
        self._current: _Transaction | None = None  # a normal (not streamed) transaction
        self._streams: dict[int, _Transaction] = {}  # streamed transactions by top-level xid
        self._stream_xid: int | None = None
        # Message type -> handler; the messages not listed (Origin, Type, Message) publish nothing.
        self._handlers: dict[type, Callable[[Any, int], list[OutgoingEvent] | None]] = {
            pgoutput.Begin: self._on_begin,
            pgoutput.Commit: self._on_commit,
            pgoutput.StreamStart: self._on_stream_start,
            pgoutput.StreamStop: self._on_stream_stop,
            pgoutput.StreamCommit: self._on_stream_commit,
            pgoutput.StreamAbort: self._on_stream_abort,
            pgoutput.Relation: self._on_relation,
            pgoutput.Insert: self._on_insert,
            pgoutput.Update: self._on_update,
            pgoutput.Delete: self._on_delete,
            pgoutput.Truncate: self._on_truncate,
        }

    @property
    def in_transaction(self) -> bool:
        return self._current is not None or bool(self._streams)

    def feed(self, message: Any, lsn: int) -> list[OutgoingEvent]:
        handler = self._handlers.get(type(message))
        if handler is None:
            return []
        return handler(message, lsn) or []

    # ---- transaction boundaries --------------------------------------------------
    def _on_begin(self, message: pgoutput.Begin, lsn: int) -> None:
        self._current = _Transaction(xid=message.xid, commit_ts=message.commit_ts)

    def _on_commit(self, message: pgoutput.Commit, lsn: int) -> list[OutgoingEvent]:
        txn, self._current = self._current, None
        if txn is None:
            return []
        return self._finish(txn, message.commit_lsn, message.end_lsn, message.commit_ts)

    def _on_stream_start(self, message: pgoutput.StreamStart, lsn: int) -> None:
        self._stream_xid = message.xid
        self._streams.setdefault(message.xid, _Transaction(xid=message.xid))

    def _on_stream_stop(self, message: pgoutput.StreamStop, lsn: int) -> None:
        self._stream_xid = None

    def _on_stream_commit(self, message: pgoutput.StreamCommit, lsn: int) -> list[OutgoingEvent]:
        txn = self._streams.pop(message.xid, None)
        if txn is None:
            return []
        return self._finish(txn, message.commit_lsn, message.end_lsn, message.commit_ts)

    def _on_stream_abort(self, message: pgoutput.StreamAbort, lsn: int) -> None:
        if message.xid == message.subxid:
            self._streams.pop(message.xid, None)  # the whole transaction rolled back
            return
        txn = self._streams.get(message.xid)
        if txn is not None:  # only a subtransaction rolled back: drop its changes
            txn.events = [(sub, ev) for sub, ev in txn.events if sub != message.subxid]

    def _finish(
        self, txn: _Transaction, commit_lsn: int, end_lsn: int, commit_ts: datetime | None
    ) -> list[OutgoingEvent]:
        events = [event for _, event in txn.events]
        mark_commit(events, end_lsn, commit_lsn, commit_ts)
        return events

    # ---- schema ---------------------------------------------------------------------
    def _on_relation(self, message: pgoutput.Relation, lsn: int) -> None:
        # Refreshed after every DDL: the key, then the writer that follows the new layout.
        self._keys[message.relid] = self._primary_key(message)
        self._writers.pop(message.relid, None)

    def key_columns(self, relation: pgoutput.Relation) -> list[str]:
        if relation.relid not in self._keys:
            self._keys[relation.relid] = self._primary_key(relation)
        return self._keys[relation.relid]

    def _writer(self, relid: int) -> RowWriter:
        """The JSON writer of the table's current layout (made at its first change)."""
        writer = self._writers.get(relid)
        if writer is None:
            relation = self.decoder.relation(relid)
            writer = RowWriter(relation, self.decoder.converters, self.key_columns(relation))
            self._writers[relid] = writer
        return writer

    # ---- row changes ------------------------------------------------------------------
    def _target(self) -> _Transaction | None:
        if self._stream_xid is not None:
            return self._streams.get(self._stream_xid)
        return self._current

    def _transaction_of(self, message: Any) -> _Transaction:
        """The open transaction a row change belongs to (its events wait there for the commit)."""
        txn = self._target()
        if txn is None:
            raise pgoutput.PgOutputDecodeError(f"{type(message).__name__} outside a transaction")
        return txn

    def _on_insert(self, message: pgoutput.Insert, lsn: int) -> None:
        txn = self._transaction_of(message)
        writer = self._writer(message.relid)
        txn.events.append((message.xid, writer.event("insert", message.new, lsn, txn.xid)))

    def _on_update(self, message: pgoutput.Update, lsn: int) -> None:
        txn = self._transaction_of(message)
        writer = self._writer(message.relid)
        new, old = message.new, message.old
        if old is not None and writer.key_values(old) != writer.key_values(new):
            # The primary key changed: the old key's row must die in the warehouse too.
            delete = writer.event("delete", old, lsn, txn.xid, toast_as_null=True)
            txn.events.append((message.xid, delete))
        if old is not None and message.old_kind == "O":
            # REPLICA IDENTITY FULL sent the old row: it holds the TOAST values the update
            # left unchanged and therefore did not send.
            new = tuple(
                was if now is pgoutput.UNCHANGED_TOAST else now
                for now, was in zip(new, old, strict=False)
            )
        # What is still unchanged TOAST is left out and named in `unchanged_toast`.
        txn.events.append((message.xid, writer.event("update", new, lsn, txn.xid)))

    def _on_delete(self, message: pgoutput.Delete, lsn: int) -> None:
        # Every column is present: what the old tuple did not carry is null.
        txn = self._transaction_of(message)
        writer = self._writer(message.relid)
        delete = writer.event("delete", message.old, lsn, txn.xid, toast_as_null=True)
        txn.events.append((message.xid, delete))

    def _on_truncate(self, message: pgoutput.Truncate, lsn: int) -> None:
        txn = self._transaction_of(message)
        for relation in map(self.decoder.relations.get, message.relids):
            if relation is not None:
                truncate = build_event(
                    relation.name, "truncate", {}, lsn, schema=relation.namespace, xid=txn.xid
                )
                txn.events.append((message.xid, truncate))


def _identity_columns(relation: pgoutput.Relation) -> list[str]:
    """Replica-identity columns as flagged in the Relation message (the primary key by default)."""
    return [col.name for col in relation.columns if col.is_key]
