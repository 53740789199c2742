"""`python -m cdc_kit.services.clickhouse_server`: the embedded ClickHouse endpoint."""

import sys

from cdc_kit.services.clickhouse_server.server import main

sys.exit(main())
