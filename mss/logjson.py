"""``[log] format = json``: one JSON object per log line, for log shippers (Loki, Elasticsearch, journald).

Fields: ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``msg`` (the formatted message),
then where present: ``callback`` (the AS's callback id: given with ``extra={"callback": ...}``, or
the argument a message's format string names as ``callback %s``, as mss's own lines do),
``worker`` (``extra={"worker": n}``), and ``exc`` (a traceback). A line is always one line: JSON
escapes the newlines of a traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

__all__ = ["JsonFormatter"]

#: How mss's format strings name a callback: ``"callback %s: ..."`` with the id as that argument.
_CALLBACK = re.compile(r"\bcallback %s")

#: A %-placeholder of a format string (``%%`` is none: it takes no argument).
_PLACEHOLDER = re.compile(r"%(?:%|\(\w+\)|[-#0 +]*(?:\d+|\*)?(?:\.(?:\d+|\*))?[a-zA-Z])")


def _callback_of(record: logging.LogRecord) -> object | None:
    """The argument a record's format string names as its callback, or None."""
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple):
        return None
    found = _CALLBACK.search(record.msg)
    if found is None:
        return None
    index = sum(p != "%%" for p in _PLACEHOLDER.findall(record.msg, 0, found.start()))
    return record.args[index] if index < len(record.args) else None


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
            callback = _callback_of(record)
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
