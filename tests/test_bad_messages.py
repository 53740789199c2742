"""The bad-message corpus: each malformed event is dead-lettered with its reason, none executes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from kafka import TopicPartition

from tests.test_router import CUSTOMER, drain, event, final_rows

CORPUS = Path(__file__).parent / "data" / "bad_messages"
EXPECTED: dict[str, list[str]] = json.loads((CORPUS / "expected.json").read_text())


def test_corpus_is_dead_lettered_with_reasons_and_routing_goes_on(isolated) -> None:
    stack, router = isolated
    names = sorted(EXPECTED)
    huge = event("attachments", "insert", "0/30", {"id": 1, "blob": "x" * 3_000_000})
    good_first = event("customer", "insert", "0/1", CUSTOMER)
    good_last = event("customer", "insert", "0/99", {**CUSTOMER, "id": 2})
    producer = stack.kafka_producer(max_request_size=8 * 2**20)
    for value in [good_first, *((CORPUS / name).read_bytes() for name in names), huge, good_last]:
        producer.send(stack.settings.cdc_topic, value=value)
    producer.flush()
    producer.close()

    stats = drain(router, expected=len(names) + 3)
    assert stats["consumed"] == len(names) + 3
    assert stats["consumed"] == stats["routed"] + stats["dead_lettered"]
    assert [row[0] for row in final_rows(stack, "customer")] == [1, 2]

    parked = sorted(router.dead_letters(), key=lambda letter: letter["offset"])
    assert len(parked) == len(names) + 1
    for name, letter in zip([*names, "huge"], parked, strict=True):
        stage, reason = EXPECTED.get(name, ["lookup", "'attachments'"])
        assert letter["stage"] == stage, (name, letter["error"])
        assert reason in letter["error"], (name, letter["error"])
    # The SQL-looking table name and values were never executed: the table is intact.
    assert stack.clickhouse().query(
        f"EXISTS TABLE `{stack.settings.clickhouse_database}`.customer"
    ).result_rows == [(1,)]


def test_a_huge_dead_letter_is_cut_in_the_topic_but_kept_whole_in_the_table(isolated) -> None:
    stack, router = isolated
    producer = stack.kafka_producer(max_request_size=8 * 2**20)
    huge = event("attachments", "insert", "0/30", {"id": 1, "blob": "y" * 2_000_000})
    producer.send(stack.settings.cdc_topic, value=huge)
    producer.flush()
    producer.close()
    drain(router, expected=1)
    parked = router.dead_letters()
    assert len(parked) == 1
    assert len(base64.b64decode(parked[0]["value"])) > 2_000_000
    consumer = stack.kafka_consumer(max_partition_fetch_bytes=8 * 2**20)
    consumer.assign([TopicPartition(stack.settings.dlq_topic, 0)])
    consumer.seek_to_beginning()
    records = [r for batch in consumer.poll(timeout_ms=3000).values() for r in batch]
    consumer.close()
    message = json.loads(records[0].value)
    assert message["original"]["truncated"] is True
    assert message["original"]["size"] > 2_000_000
