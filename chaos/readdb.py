"""`python -m chaos.readdb DSN`: one read-only query (JSON on stdin) on an embedded ClickHouse.

The verifier reads the database of a worker that has stopped through this child process: chdb
holds one engine per process, and the suite's own process may need another one next.
"""

from __future__ import annotations

import json
import sys

from projections.store import READ_ONLY_SQL, ClickHouseStore, encode_result


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m chaos.readdb chdb:///path < {sql, parameters}", file=sys.stderr)
        return 2
    request = json.loads(sys.stdin.read())
    sql = str(request["sql"])
    if not READ_ONLY_SQL.match(sql):
        print("only read-only statements", file=sys.stderr)
        return 2
    store = ClickHouseStore(argv[0], "rapport")
    result = store.query(sql, dict(request.get("parameters") or {}))
    sys.stdout.buffer.write(encode_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
