"""Client text is shown with its control characters escaped, in logs and on terminals."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mailserver import logs
from mailserver.text import escape


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("dr.martin@hopital.test", "dr.martin@hopital.test"),
        ("a\r\nb", "a\\r\\nb"),
        ("nul\x00", "nul\\x00"),
        ("\x1b[2J", "\\x1b[2J"),
        ("tab\tdel\x7f", "tab\\tdel\\x7f"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("line\u2028sep", "line\\u2028sep"),
        ("rtl\u202eevil", "rtl\\u202eevil"),
        ("back\\slash", "back\\\\slash"),
        ("Hélène", "Hélène"),
    ],
)
def test_escape(raw: str, shown: str) -> None:
    assert escape(raw) == shown
    assert escape(raw).isprintable()


def test_typed_escapes_cannot_pass_for_control_characters() -> None:
    assert escape("a\\r\\nb") != escape("a\r\nb")


def test_escaping_escaped_text_again_without_backslashes_changes_nothing() -> None:
    once = escape("evil\r\n\x1b[2J\\")
    assert escape(once, backslash=False) == once


def test_json_log_lines_carry_no_control_character() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("masante.test-text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("evil\x1b[2J", extra={"fields": {"name": "a\r\nb\x00", "list": ["\x1b"], "n": 3}})
    finally:
        logger.removeHandler(handler)
    line = out.getvalue()
    assert line.count("\n") == 1
    obj = json.loads(line)
    assert (obj["event"], obj["name"], obj["list"], obj["n"]) == ("evil\\x1b[2J", "a\\r\\nb\\x00", ["\\x1b"], 3)


def test_library_loggers_stay_at_warning_at_debug() -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        logs.setup("DEBUG")
        assert root.isEnabledFor(logging.DEBUG)
        for name in ("sqlalchemy.engine.Engine", "aiosqlite", "asyncpg", "mail.log"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
