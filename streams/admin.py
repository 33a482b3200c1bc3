"""POST /admin/sql on the worker: any statement against the ClickHouse the worker owns.

Off unless `RAPPORT_WORKER_ADMIN_SQL=true` (`Settings.worker_admin_sql`). It exists for tests
that need a real ClickHouse failure while the worker owns the embedded engine, e.g.
`ALTER TABLE rapport.interactions ADD CONSTRAINT block CHECK 0` makes every insert into
`interactions` fail until `... DROP CONSTRAINT block`. Statements run on the sink's thread,
between insert attempts.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.web import Request, Response, View

from streams.sink import ClickHouseSink

log = logging.getLogger("rapport.admin")


def register_admin_sql(app: faust.App, sink: ClickHouseSink) -> None:
    class AdminSqlView(View):
        async def post(self, request: Request) -> Response:
            try:
                payload: dict[str, Any] = await request.json()
                sql = str(payload["sql"])
            except (ValueError, KeyError, TypeError) as exc:
                return self.json({"error": f"expected {{sql}}: {exc}"}, status=400)
            log.warning("admin sql: %s", sql)
            try:
                answer = await sink.command(sql)
            except Exception as exc:
                return self.json({"error": f"{type(exc).__name__}: {exc}"}, status=400)
            return self.json({"result": answer})

    class SinkStatusView(View):
        async def get(self, request: Request) -> Response:
            return self.json(
                {
                    "failures": sink.failures,
                    "last_error": sink.last_error,
                    "failing": sink.failing,
                    "rows_written": sink.rows_written,
                }
            )

    app.page("/admin/sql")(AdminSqlView)
    app.page("/admin/sink")(SinkStatusView)
