"""The router: change events from Kafka -> the right ClickHouse table, in batches.

    from cdc_kit.router import Router
    router = Router(stack)
    router.catch_up()          # route until ClickHouse holds what PostgreSQL committed so far
    router.start()             # ... or keep routing in the background; router.stats(), stop()

Along the data path: `source` reads records for a consumer group (Kafka, and its lease),
`routing` decides (a pure function), `sink` writes rows, dead letters and progress (ClickHouse),
`worker` runs read -> route -> write -> record -> commit, `stats` counts. `MemorySource` and
`MemorySink` are the in-memory twins of the source and the sink.
"""

from cdc_kit.router.routing import Record, RoutedBatch, RoutingError, route
from cdc_kit.router.sink import ClickHouseSink, MemorySink, Sink
from cdc_kit.router.source import KafkaSource, MemorySource, MemoryTopic, Source
from cdc_kit.router.stats import BatchResult
from cdc_kit.router.worker import Router, main

__all__ = [
    "BatchResult",
    "ClickHouseSink",
    "KafkaSource",
    "MemorySink",
    "MemorySource",
    "MemoryTopic",
    "Record",
    "RoutedBatch",
    "Router",
    "RoutingError",
    "Sink",
    "Source",
    "main",
    "route",
]
