"""ClickHouse 26.9 as a loopback server, from PyPI's chdb-core: the engine's clickhouse-local code with its own HTTP
and native listeners open (scripts/stack runs it; ../shared/notes has what was checked).

usage: python serve.py CONFIG_DIR

CONFIG_DIR holds the config.xml that clickhouse-local reads from its working directory (listen host, ports, data
path, logger). The listeners live only while one query runs, so the process runs a query that never ends; SIGTERM
or SIGKILL stops it, and the data path keeps every committed part, as a packaged server's would.
"""

import os
import sys

import chdb  # noqa: F401  (its import changes directory into the package and back)
from chdb import _chdb

# A query that never finishes: one row a second from a very long range, each thrown away.
KEEP_ALIVE = "SELECT sleepEachRow(1) FROM numbers(1000000000000) FORMAT Null SETTINGS max_block_size = 1"


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    os.chdir(sys.argv[1])
    _chdb.query("SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; " + KEEP_ALIVE, "TSV")
    # The keep-alive query only ends when something stops it (a KILL QUERY, say): the server is gone then.
    print("clickhouse: the listeners' query ended; the server stops", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
