"""The router's at-least-once rules, on the in-memory twins of its source and sink: no services.

    read (MemorySource) -> route -> write (MemorySink) -> record progress -> commit
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdc_kit import olap
from cdc_kit.errors import CdcKitError
from cdc_kit.router import MemorySink, MemorySource, MemoryTopic, Router
from tests.contract_events import CUSTOMER
from tests.contract_events import event as contract_event


def event(operation: str, lsn: int, **payload: Any) -> bytes:
    """A customer change that is a transaction of its own (the router records its end)."""
    end = {"end_lsn": f"0/{lsn + 1:X}", "last_in_txn": True}
    return contract_event("customer", operation, f"0/{lsn:X}", {**CUSTOMER, **payload}, **end)


def router_on(topic: MemoryTopic, sink: MemorySink, group: str = "router") -> Router:
    return Router(
        registry=dict(olap.OLAP_MODELS), source=MemorySource(topic, group), sink=sink,
        batch_size=3,
    )  # fmt: skip


@pytest.fixture()
def topic() -> MemoryTopic:
    return MemoryTopic()


@pytest.fixture()
def sink() -> MemorySink:
    return MemorySink()


def test_offsets_are_committed_only_after_the_write(topic: MemoryTopic, sink: MemorySink) -> None:
    topic.append(*(event("insert", 16 * n, id=n) for n in range(1, 4)))
    router = router_on(topic, sink)
    sink.fail_next_write = ConnectionError("ClickHouse went away")
    with pytest.raises(ConnectionError):
        router.step()
    assert "router" not in topic.committed and sink.tables["customer"] == []
    assert sink.progress == {}, "no progress is recorded for rows not written"
    result = router.step()  # the same batch again, this time written
    assert result.consumed == 3 and topic.committed["router"] == 3
    assert [row["id"] for row in sink.tables["customer"]] == [1, 2, 3]
    assert sink.progress["router"] == 16 * 3 + 1


def test_nothing_is_committed_across_a_broker_restart(topic: MemoryTopic, sink: MemorySink):
    topic.append(*(event("insert", 16 * n, id=n) for n in range(1, 4)))
    router = router_on(topic, sink)

    class RestartDuringWrite(MemorySink):
        def write(self, batch):  # the broker restarts while the first batch is being written
            if topic.generation == 0:
                topic.restart()
            return super().write(batch)

    router.sink = restarting = RestartDuringWrite()
    restarting.prepare(router.registry)
    assert router.step().consumed == 0, "a batch read from a lost topic counts for nothing"
    assert topic.committed == {} and restarting.progress == {}
    assert router.stats()["restarts_seen"] == 1
    # Capture re-streams from the slot into the new topic; reading starts at its offset 0.
    topic.append(*(event("insert", 16 * n, id=n) for n in range(1, 3)))
    assert router.step().consumed == 2 and topic.committed["router"] == 2


def test_every_consumed_event_is_routed_or_dead_lettered(topic: MemoryTopic, sink: MemorySink):
    topic.append(
        event("insert", 16, id=1),
        b"not json",
        json.dumps({"metadata": {"table": "unknown", "operation": "insert", "lsn": "0/20"},
                    "payload": {"id": 1}}).encode(),  # fmt: skip
        event("insert", 48, id=2, email=None),  # a column the model requires is missing
        event("delete", 64, id=1, email=None, name=None, country=None, city=None),
        None,
    )
    router = router_on(topic, sink)
    while router.step().consumed:
        pass
    stats = router.stats()
    assert stats["consumed"] == 6 == stats["routed"] + stats["dead_lettered"]
    assert stats["dead_by_stage"] == {"decode": 2, "lookup": 1, "validate": 1}
    assert [letter["offset"] for letter in sink.dead_letters("router")] == [1, 2, 3, 5]
    assert sink.final("customer") == [], "the delete hides customer 1"


def test_a_router_that_takes_the_group_starts_from_the_committed_offset(
    topic: MemoryTopic, sink: MemorySink
) -> None:
    topic.append(*(event("insert", 16 * n, id=n) for n in range(1, 10)))
    first, second = router_on(topic, sink), router_on(topic, sink)
    assert first.step().consumed == 3  # offsets 0-2, then the group is given back
    assert second.step().consumed == 3  # 3-5: from the commit, not from 0
    assert first.step().consumed == 3  # 6-8: from the commit, not from its own 3
    ids = [row["id"] for row in sink.tables["customer"]]
    assert ids == list(range(1, 10)), "nothing routed twice, nothing skipped"


def test_a_router_holds_the_group_only_while_it_works(topic: MemoryTopic, sink: MemorySink):
    first = router_on(topic, sink)
    first.step()
    assert not first.source.held and topic.holders == {}
    second = router_on(topic, sink)
    second.source.take()
    with pytest.raises(CdcKitError, match="held by another router"):
        first.step()


def test_replayed_dead_letters_count_as_routed(topic: MemoryTopic, sink: MemorySink) -> None:
    topic.append(event("insert", 16, id=1))
    router = Router(registry={}, source=MemorySource(topic), sink=sink)
    assert router.step().dead_lettered == 1
    router.register(olap.CustomerOlap)
    assert router.replay_dead_letters().routed == 1
    stats = router.stats()
    assert stats["consumed"] + stats["replayed"] == stats["routed"] + stats["dead_lettered"]
    assert router.dead_letters() == [] and len(sink.final("customer")) == 1
