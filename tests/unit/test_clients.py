"""Clients that fail to connect leave nothing behind (no service: the broker is a closed port)."""

from __future__ import annotations

import gc
import logging
import os
import threading

from cdc_kit import clients
from cdc_kit.config import Settings
from cdc_kit.services.process import free_ports


def test_an_admin_client_that_cannot_connect_leaves_no_thread_or_descriptor() -> None:
    """kafka-python 3.0's KafkaAdminClient raises from its constructor when no broker answers,
    and leaves its network thread and sockets behind; capture retries every few seconds while
    a broker is away, so each try must clean up."""
    settings = Settings(kafka_port=free_ports(1)[0])  # nothing listens there
    # kafka-python's error log records name its connections; pytest keeps every record for
    # its report, which would keep those sockets open. Capture logs to a file and keeps none.
    logging.disable(logging.CRITICAL)
    try:
        gc.collect()
        descriptors, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
        failures = 0
        for _ in range(3):
            try:  # not pytest.raises: its traceback would keep the half-made client alive
                clients.kafka_admin(settings, bootstrap_timeout_ms=300)
            except Exception:  # noqa: BLE001 - kafka-python's timeout; any failure will do
                failures += 1
        gc.collect()  # as capture does after a failed session
    finally:
        logging.disable(logging.NOTSET)
    assert failures == 3, "nothing listens there: every try must fail"
    assert threading.active_count() <= threads  # (earlier tests' threads may end meanwhile)
    assert len(os.listdir("/proc/self/fd")) <= descriptors
