"""Structured logs: one JSON object per line, carrying ids only.

Invariants:
- Never a message body, a password, a key or a document. The session and
  message ids come from context variables set by the protocol sessions, so
  every line of a session can be found together.
- Nothing raw from the network: every string a line carries (event, fields,
  the error's text) passes through ``mailserver.text.escape``, so a client's
  CR LF cannot forge a line and its ESC cannot drive the terminal of whoever
  reads the log (``jq -r`` decodes JSON escapes; ours survive it).
- The rule holds at every level: the loggers of the libraries under us
  (SQLAlchemy and the database drivers, which log each statement with its
  parameters; aiosmtpd, which logs each command line, AUTH included) stay at
  WARNING whatever ``[log] level`` says, DEBUG included.

    log.info("imap.login", extra={"fields": {"account": "account:3"}})
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import Any

from mailserver.text import escape

session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
message_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("message_id", default=None)

#: libraries whose DEBUG/INFO lines carry data (SQL parameters, protocol lines): WARNING and above only
QUIET_LIBRARIES = ("sqlalchemy", "aiosqlite", "asyncpg", "alembic", "mail.log", "aiosmtpd", "asyncio")


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return escape(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": escape(record.getMessage()),
        }
        sid, mid = session_id.get(), message_id.get()
        if sid:
            out["session"] = escape(sid)
        if mid:
            out["msg"] = escape(mid)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(_safe(fields))
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = escape(f"{record.exc_info[0].__name__}: {record.exc_info[1]}")
        return json.dumps(out, ensure_ascii=False)


def quiet_libraries() -> None:
    """Hold the libraries' loggers at WARNING (their lower levels log SQL parameters and protocol lines)."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_libraries()
