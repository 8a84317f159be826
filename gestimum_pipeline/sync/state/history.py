"""Reading one row's story: its record, the record log, the requests that carried it, the actions."""

from __future__ import annotations

from typing import Any

from gestimum_pipeline.sync.state.base import StoreBase, text_array


class HistoryMixin(StoreBase):
    """Reads `record_log` (migration 0009) beside `records`, `requests` and `actions`."""

    def row_history(self, endpoint: str, source_key: str) -> dict[str, Any]:
        """{"record": the record or None, "log": [...], "requests": [...], "actions": [...]}, oldest first."""
        conn = self.conn
        params: dict[str, Any] = {"endpoint": endpoint, "key": source_key}
        with conn, conn.cursor() as cur:

            def rows(name: str) -> list[dict[str, Any]]:
                cur.execute(self._sql(name), params)
                names = [d.name for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

            found = rows("history_record")
            record = found[0] if found else None
            log = rows("history_log")
            wanted = {e["request_id"] for e in log if e["request_id"]}
            if record is not None and record["request_id"]:
                wanted.add(record["request_id"])
            params["requests"] = text_array(sorted(wanted))
            requests = rows("history_requests")
            actions = rows("history_actions")
        return {"record": record, "log": log, "requests": requests, "actions": actions}
