"""The Router: read -> route -> write -> record -> commit, one batch at a time.

    Source (Kafka) --read--> route() (pure) --write--> Sink (ClickHouse) --record--> progress
        ^                                                                               |
        +---------------------------------- commit offsets <----------------------------+

Rules that make it safe to lift into production:
- no `if table == ...`: the registry maps a table name to its OLAP model; registering a model
  is the only step to route a new table;
- a bad event never stops the router: it becomes a dead letter with its reason and stage, so
  `consumed + replayed == routed + dead_lettered` always holds;
- offsets are committed only after the batch is written (at-least-once), and never across a
  broker restart; replays are harmless because ReplacingMergeTree keeps the highest LSN;
- after each batch the router records the end LSN of the last transaction it fully wrote,
  which capture needs before it lets PostgreSQL forget those changes;
- one router per consumer group at a time, and one batch at a time per router: calls from a
  notebook (`step`, `dead_letters`, `replay_dead_letters`) wait for the running batch;
- a router holds its group only while it works (a `step`, a `catch_up`, or routing in the
  background), each time from the committed offset; a background router hands the group to a
  router that asks for it, between two batches (`lease`).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cdc_kit import clients, olap, replication
from cdc_kit.config import Settings, get_settings
from cdc_kit.errors import FixableError, first_line, one_line
from cdc_kit.lsn import lsn_to_str
from cdc_kit.router.routing import dead_letter, route
from cdc_kit.router.sink import ClickHouseSink, Sink, record_of
from cdc_kit.router.source import KafkaSource, Source
from cdc_kit.router.stats import BatchResult, RouterStats

log = logging.getLogger("cdc_kit.router")

#: While batches keep coming, the progress is recorded at most this often.
PROGRESS_EVERY_S = 0.2

__all__ = ["BatchResult", "Router", "main"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Rest Python's cyclic garbage collector for one batch.

    A batch holds tens of thousands of new objects (records, events, rows) until it is
    written. The collections their allocations trigger walk them again and again, and now and
    then everything the process holds (in a notebook kernel: pandas, SQLAlchemy, ...). None
    of them forms a cycle: reference counting frees them all when the batch ends. Measured in
    bench/bench_throughput.py: about a third of the router's time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Router:
    """Routes the change topic into ClickHouse. Use `step()`, `catch_up()`, `start()`/`stop()`,
    `stats()`; `close()` when done (a notebook's last cell)."""

    def __init__(
        self,
        stack: Any = None,
        settings: Settings | None = None,
        registry: dict[str, type] | None = None,
        group: str | None = None,
        batch_size: int = 5000,
        poll_timeout_ms: int = 200,
        insert_settings: dict[str, Any] | None = None,
        hands_over: bool = True,
        source: Source | None = None,
        sink: Sink | None = None,
    ) -> None:
        """`stack` (or `settings`) says where the services are.

        `registry`: table -> OLAP model (default: the shared `olap.OLAP_MODELS`).
        `insert_settings`: ClickHouse settings for every INSERT, e.g. `{"optimize_on_insert": 0}`
        to keep versions of one key that arrive in the same batch (lesson 07).
        `hands_over`: while routing in the background, give the group to another router that
        asks for it (a notebook's router does; the `route` service keeps its group).
        `source`, `sink`: where records come from and rows go (default: Kafka, ClickHouse; the
        in-memory twins test the router's rules without services).
        """
        self.settings: Settings = settings or (stack.settings if stack else get_settings())
        self.registry = registry if registry is not None else olap.OLAP_MODELS
        self.group = source.group if source else (group or self.settings.router_group)
        self.batch_size = batch_size
        self.poll_timeout_ms = poll_timeout_ms
        self.source: Source = source or KafkaSource(self.settings, self.group, hands_over)
        self.sink: Sink = sink or ClickHouseSink(self.settings, insert_settings)
        self._progress_lsn = 0  # written to the sink (known at once)
        self._progress_saved = 0  # ... and recorded there for capture
        self._progress_saved_at = 0.0
        self._thread: threading.Thread | None = None
        self._background = False  # routing in its thread: the group stays held between batches
        self._stop = threading.Event()
        self._batch_lock = threading.RLock()  # one batch at a time, whoever asks
        self._stats = RouterStats()

    # ---- the group ----------------------------------------------------------------------
    def connect(self) -> None:
        """Make what the registered tables need (the group is taken only while working)."""
        if not self.sink.ready:
            self.sink.prepare(self.registry)

    @contextmanager
    def _holding_group(self) -> Iterator[None]:
        """Hold the consumer group for one piece of work (nested calls share it).

        Unless this router routes in the background, the group is given back afterwards, so
        an idle notebook never blocks another one.
        """
        with self._batch_lock:
            taken = not self.source.held
            if taken:
                self.connect()
                self.source.take()
            try:
                yield
            finally:
                if taken and not self._background:
                    self._give_back_group()

    def _give_back_group(self) -> None:
        """Record progress while it is still ours to record, then let the group go."""
        try:
            if self.sink.ready:
                self._save_progress()
        except Exception as exc:  # noqa: BLE001 - the warehouse is gone: capture re-sends
            log.warning("could not record progress: %s", first_line(exc))
        finally:
            self.source.give_back()

    def register(self, model: type[olap.CdcOlapModelBase]) -> type[olap.CdcOlapModelBase]:
        """Route `model.__table__` from now on; with a connected router its table is made now."""
        with self._batch_lock:
            olap.register(model, self.registry)
            if self.sink.ready:
                self.sink.sync(model.__table__, model)
        return model

    # ---- one batch ----------------------------------------------------------------------
    def step(self, timeout_ms: int | None = None) -> BatchResult:
        """One batch: read it, route it, write it, record progress, then commit offsets."""
        with self._holding_group():
            return self._step(self.poll_timeout_ms if timeout_ms is None else timeout_ms)

    def _step(self, timeout_ms: int) -> BatchResult:
        if self.source.restarted():
            self._broker_restarted()
        records = self.source.poll(self.batch_size, timeout_ms)  # read
        if not records:
            self._save_progress()  # idle: a good moment to tell capture how far we are
            self._stats.set("lag", self.source.lag())
            return BatchResult()
        with collector_paused():
            batch = route(records, self.registry, self.sink.stored_values)  # route
            try:
                result = self.sink.write(batch)  # write: refused rows join the dead letters
                self.sink.park(batch.dead, self.group)
            except Exception:
                self.source.rewind(records[0].offset)  # nothing committed: again next time
                raise
            progress_lsn, next_offset = batch.progress_lsn, records[-1].offset + 1
            del batch, records  # freed now, by reference counting, while the collector rests
        if self.source.restarted():
            # The rows are valid changes (the warehouse keeps the newest); but positions on a
            # restarted broker mean nothing: record nothing, commit nothing, start over.
            self._broker_restarted()
            return BatchResult()
        self._note_progress(progress_lsn)  # record
        self.source.commit(next_offset)  # commit
        self._stats.add_batch(result)
        self._stats.set("lag", self.source.lag())
        return result

    def _broker_restarted(self) -> None:
        log.warning("the broker restarted: reading the new topic from the beginning")
        self._stats.count("restarts_seen")

    def _note_progress(self, lsn: int | None) -> None:
        if lsn and lsn > self._progress_lsn:
            self._progress_lsn = lsn
            if time.monotonic() - self._progress_saved_at > PROGRESS_EVERY_S:
                self._save_progress()

    def _save_progress(self) -> None:
        """Record how far the router has written (capture reads it).

        Recorded at most every PROGRESS_EVERY_S while busy, and whenever the topic is drained:
        a later record only delays when PostgreSQL may free WAL, never loses a change.
        """
        if self._progress_lsn > self._progress_saved:
            self.sink.record_progress(self.group, self._progress_lsn)
            self._progress_saved = self._progress_lsn
            self._progress_saved_at = time.monotonic()

    # ---- catching up --------------------------------------------------------------------
    def catch_up(self, timeout: float = 30.0) -> BatchResult:
        """Route until every change committed in PostgreSQL so far is in ClickHouse.

        "So far" is PostgreSQL's WAL position when the call starts. Done when the router has
        written up to it, or capture has confirmed it (nothing of ours was pending there).
        """
        conn = clients.pg_connection(self.settings)  # one connection for the whole wait
        conn.autocommit = True
        try:
            with self._holding_group():
                return self._catch_up(conn, timeout)
        finally:
            conn.close()

    def _catch_up(self, conn: Any, timeout: float) -> BatchResult:
        target = replication.current_wal_lsn(conn)
        total = BatchResult()
        deadline = time.monotonic() + timeout
        while True:
            result = self.step(timeout_ms=50)
            total += result
            if result.consumed == 0 and self._reached(conn, target):
                return total
            if time.monotonic() > deadline:
                raise FixableError(
                    f"not caught up with PostgreSQL ({lsn_to_str(target)}) after "
                    f"{timeout:.0f} s: is capture running (`python -m cdc_kit status`)? "
                    f"routed so far: {total}"
                )

    def _reached(self, conn: Any, target: int) -> bool:
        if self._progress_lsn >= target:
            return True
        confirmed = replication.confirmed_lsn(conn, self.settings.slot_name)
        return confirmed is not None and confirmed >= target

    # ---- dead letters -------------------------------------------------------------------
    def dead_letters(self, include_replayed: bool = False) -> list[dict[str, Any]]:
        """This router group's parked events (newest state of each), as dicts for display."""
        with self._batch_lock:
            self.connect()  # reading needs no group
            return self.sink.dead_letters(self.group, include_replayed)

    def replay_dead_letters(self) -> BatchResult:
        """Route the parked events again, e.g. after registering a model or fixing data.

        Those that now route are marked replayed; those that fail again stay parked with the
        new reason. A replayed change cannot overwrite newer data: ClickHouse keeps the row
        with the highest LSN, and a replay keeps the event's original LSN.
        """
        with self._holding_group():
            parked = self.sink.dead_letters(self.group)
            if not parked:
                return BatchResult()
            records = [record_of(letter) for letter in parked]
            batch = route(records, self.registry, self.sink.stored_values)
            result = self.sink.write(batch)
            failed = {letter.id for letter in batch.dead}
            replayed = [
                dead_letter(record, letter["stage"], letter["error"])
                for record, letter in zip(records, parked, strict=True)
                if letter["id"] not in failed
            ]
            self.sink.mark_replayed(replayed, self.group)
            self.sink.park(batch.dead, self.group)
            self._stats.add_replay(len(replayed), result)
            return result

    # ---- background thread --------------------------------------------------------------
    def start(self) -> Router:
        """Route in a background thread (e.g. inside a notebook kernel) until `stop()`.

        The group is taken here, in the caller's cell: a background router elsewhere is asked
        to hand it over; one that keeps it, or does not answer, is named in a one-line error.
        """
        if self.running:
            return self
        with self._batch_lock:
            self.connect()
            if not self.source.held:
                self.source.take()
            self._background = True
        self._stats.set("handed_over_to", None)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="cdc-kit-router", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background thread after its current batch (and give the group back)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # a later start() would run a second loop beside it
                raise FixableError(
                    f"the router's thread did not stop within {timeout:.0f} s (a batch is still "
                    "running: ClickHouse or Kafka slow to answer?); call stop() again"
                )
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        backoff = 0.5
        try:
            while not self._stop.is_set():
                asker = self.source.handover_requested()
                if asker is not None:
                    self._hand_over(asker)
                    return
                try:
                    self.step()
                    backoff = 0.5
                except Exception as exc:  # noqa: BLE001 - the loop must survive any failure
                    self._stats.set("last_error", one_line(exc))
                    log.error(
                        "router batch failed (%s); retrying in %.1f s", first_line(exc), backoff
                    )
                    with self._batch_lock:
                        self.source.reset()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            with self._batch_lock:
                self._background = False
                self._give_back_group()

    def _hand_over(self, asker: dict[str, Any]) -> None:
        """Another router asked for the group: stop here (the loop's end gives it back)."""
        who = f"pid {asker['pid']} ({asker['name']}) at {time.strftime('%H:%M:%S')}"
        self._stats.set("handed_over_to", who)
        log.warning(
            "router group %r handed over to %s; router.start() takes it back", self.group, who
        )

    # ---- statistics ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (safe to call from another thread, e.g. a widget).

        `events_per_s` is the consumption rate over the last few seconds.
        """
        stats = self._stats.snapshot()
        stats["running"] = self.running
        stats["progress_lsn"] = self._progress_lsn
        return stats

    def close(self) -> None:
        """Stop, give up the group's lease (another router may start) and close the clients."""
        self.stop()
        with self._batch_lock:
            if self.source.held:
                self._give_back_group()
            self.sink.close()
            self.source.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cdc_kit route", description=__doc__)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    router = Router(batch_size=args.batch_size, hands_over=False)  # a service keeps its group
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    router.start()
    while not stopping.wait(5.0):
        log.info("router: %s", {k: v for k, v in router.stats().items() if k != "by_table"})
    router.close()
    return 0
