"""Client text made safe to show: control characters as visible escapes.

Invariants:
- ``escape`` returns text with no control character in it: C0 (``\\x00``-``\\x1f``),
  DEL, C1 (``\\x80``-``\\x9f``, among them the 8-bit CSI ``\\x9b``), and the
  Unicode line separators and bidirectional overrides, each shown as a Python
  style escape (``\\r``, ``\\n``, ``\\t``, ``\\x00``, ``\\x1b``, ``\\u2028``...).
  A login name ``a\\r\\nb`` can neither forge a second line in a log or the
  audit log nor move a terminal's cursor (``\\x1b[2J``).
- A backslash is doubled by default, so that an escape in the output always
  means a control character in the input: a client cannot type ``\\r\\n`` to
  look like one. ``backslash=False`` leaves backslashes alone, for text that
  was escaped once already (``audit tail`` shows stored entries that way).
- Pure: no I/O, no import beyond the standard library; any layer may use it.
"""

from __future__ import annotations

import re

_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
# C0, DEL, C1; LINE/PARAGRAPH SEPARATOR; bidi embeddings, overrides and isolates (Trojan Source)
_CONTROLS = "\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_WITH_BACKSLASH = re.compile(f"[{_CONTROLS}\\\\]")
_WITHOUT_BACKSLASH = re.compile(f"[{_CONTROLS}]")


def _one(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, *, backslash: bool = True) -> str:
    """``text`` with every control character shown as an escape (and ``\\`` as ``\\\\`` unless told not to)."""
    return (_WITH_BACKSLASH if backslash else _WITHOUT_BACKSLASH).sub(_one, text)


def escape_optional(text: str | None, *, backslash: bool = True) -> str | None:
    return None if text is None else escape(text, backslash=backslash)
