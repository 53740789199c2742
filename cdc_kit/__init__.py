"""cdc-kit: change-data-capture from PostgreSQL into ClickHouse, for learning and for real.

Start here in a notebook::

    from cdc_kit.stack import ensure_running
    stack = ensure_running()        # PostgreSQL, Kafka broker and ClickHouse, ready to use
"""

__version__ = "0.1.0"
