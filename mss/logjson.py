"""``[log] format = json``: one JSON object per log line, for log shippers (Loki, Elasticsearch, journald).

Fields: ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``msg`` (the formatted message),
then where present: ``callback`` (the AS's callback id: given with ``extra={"callback": ...}``, or
read from a message that names it as ``callback <id>``), ``worker`` (``extra={"worker": n}``), and
``exc`` (a traceback). A line is always one line: JSON escapes the newlines of a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

__all__ = ["JsonFormatter"]

#: How mss's messages name a callback: ``callback <id>`` (ids as IIF allows them, SPEC.md).
_CALLBACK = re.compile(r"\bcallback ([A-Za-z0-9._-]{1,31})\b")


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _ts(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once a second, not once a line
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        out: dict[str, Any] = {
            "ts": self._ts(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": msg,
        }
        callback = getattr(record, "callback", None)
        if callback is None:
            found = _CALLBACK.search(msg)
            callback = found.group(1) if found else None
        if callback is not None:
            out["callback"] = str(callback)
        worker = getattr(record, "worker", None)
        if worker is not None:
            out["worker"] = worker
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)
