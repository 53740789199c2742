"""Service-free tests: nothing here starts PostgreSQL, a broker or ClickHouse.

`pytest tests/unit` runs them all in seconds (under 15 s is the rule); every other test folder
starts the real services it needs.
"""
