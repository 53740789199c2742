"""The router: change events from Kafka -> the right ClickHouse table, in batches.

    from cdc_kit.router import Router
    router = Router(stack)
    router.catch_up()          # route until ClickHouse holds what PostgreSQL committed so far
    router.start()             # ... or keep routing in the background; router.stats(), stop()

`routing` decides (a pure function), `worker` does the I/O, `dead_letters` parks what cannot
be routed, `lease` keeps it to one router per consumer group.
"""

from cdc_kit.router.routing import Record, RoutedBatch, RoutingError, route
from cdc_kit.router.worker import BatchResult, Router, main

__all__ = ["BatchResult", "Record", "RoutedBatch", "Router", "RoutingError", "main", "route"]
