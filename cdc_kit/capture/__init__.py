"""Capture: PostgreSQL's logical replication stream -> the change topic, in the kit's contract.

`changes` holds the rules (pgoutput messages -> events), `snapshot` the initial rows,
`producer` the delivery to Kafka, `worker` the loop (`Capture`), `heartbeat` its health file.
"""

from cdc_kit.capture.worker import Capture, main

__all__ = ["Capture", "main"]
