"""Capture: PostgreSQL's logical replication stream -> the change topic, in the kit's contract.

`changes` holds the rules (pgoutput messages -> events), `snapshot` the initial rows,
`producer` the delivery to Kafka, `worker` the loop (`Capture`), `heartbeat` its health file.

Nothing is imported here: the stack reads capture's heartbeat, and must not load the worker
(confluent-kafka, the decoder, ClickHouse's client: ~0.1 s) to do so.
"""
