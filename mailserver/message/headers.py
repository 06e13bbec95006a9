"""Header fields as bytes and as text: the header index of a message or body part.

Invariants:
- A header block is split into fields without losing a byte: joining
  ``HeaderField.raw`` of every field gives the block back (the blank line
  that ends it is not a field). A line that is no field (no colon) is kept as
  a field named ``""``.
- Text is decoded as UTF-8 (RFC 6532) and, only where the bytes are not
  UTF-8, as Latin-1: a header value never holds U+FFFD made by this module.
- RFC 2047 encoded words are kept as written in ``value``; ``decoded`` turns
  them into text (an unknown charset leaves the word as written).
- Parameters (RFC 2045 §5.1, RFC 2183) keep their values as written, quotes
  and backslash escapes removed; RFC 2231 continuations (``name*0``,
  ``name*1*``) are joined and their charset applied.

See Also: RFC 5322 §2.2 (header fields, folding), RFC 6532 §3.2, RFC 2047, RFC 2231.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass

_FIELD_NAME = re.compile(rb"[ \t]*([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=)[ \t\r\n]+(?==\?[^?\s]+\?[QqBb]\?[^?\s]*\?=)")


def text(data: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532), or Latin-1 where they are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def unfold(value: str) -> str:
    """RFC 5322 §2.2.3: CRLF before whitespace removed, ends trimmed."""
    return _FOLD.sub("", value).strip()


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One field as written: ``raw`` holds its name, colon, value, continuation lines and line end."""

    name: str  # as written ("" for a line that is no field)
    raw: bytes
    key: str = ""  # the name in lower case (filled in when left empty)

    def __post_init__(self) -> None:
        if not self.key and self.name:
            object.__setattr__(self, "key", self.name.lower())

    @property
    def value(self) -> str:
        """The value unfolded, as text, encoded words as written."""
        _, sep, v = self.raw.partition(b":")
        return unfold(text(v)) if sep else ""

    @property
    def decoded(self) -> str:
        """The value with RFC 2047 encoded words decoded, white space collapsed."""
        return decode_words(self.value)


def split_header(raw: bytes, start: int = 0, end: int | None = None) -> int:
    """The offset just past the header block of ``raw[start:end]`` (its blank line included)."""
    stop = len(raw) if end is None else end
    if raw.startswith(b"\r\n", start) and start + 2 <= stop:
        return start + 2
    if raw.startswith(b"\n", start) and start + 1 <= stop:
        return start + 1
    i = start
    while True:
        j = raw.find(b"\n", i, stop)
        if j < 0:
            return stop
        k = j + 1
        if raw.startswith(b"\r\n", k) and k + 2 <= stop:
            return k + 2
        if raw.startswith(b"\n", k) and k + 1 <= stop:
            return k + 1
        i = k


def parse_fields(block: bytes) -> tuple[HeaderField, ...]:
    """The fields of a header block (with or without its blank line)."""
    out: list[HeaderField] = []
    lines = block.splitlines(keepends=True)
    name = ""
    current: list[bytes] = []
    for line in lines:
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            out.append(HeaderField(name, b"".join(current)))
        m = _FIELD_NAME.match(line)
        name = m.group(1).decode("ascii") if m else ""
        current = [line]
    if current:
        out.append(HeaderField(name, b"".join(current)))
    return tuple(out)


# --- RFC 2047 -------------------------------------------------------------------------------------------------


def _decode_word(m: re.Match[str]) -> str:
    charset, enc, payload = m.group(1), m.group(2).upper(), m.group(3)
    charset = charset.split("*", 1)[0]  # RFC 2231 §5: a language after the charset
    try:
        if enc == "B":
            data = base64.b64decode(payload + "=" * (-len(payload) % 4))
        else:
            data = binascii.a2b_qp(payload.replace("_", " ").encode("ascii"), header=True)
        return data.decode(charset, "replace")
    except (binascii.Error, ValueError, LookupError, UnicodeEncodeError):
        return m.group(0)


def decode_words(value: str) -> str:
    """RFC 2047 §6.2: encoded words decoded; white space between two adjacent encoded words dropped."""
    if "=?" not in value:
        return " ".join(value.split())
    joined = _BETWEEN_WORDS.sub(r"\1", value)
    return " ".join(_ENCODED_WORD.sub(_decode_word, joined).split())


# --- parameters (Content-Type, Content-Disposition) ---------------------------------------------------------


def _skip_comment(s: str, i: int) -> int:
    depth = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _quoted(s: str, i: int) -> tuple[str, int]:
    """The quoted string starting at ``s[i] == '"'``: (its content unescaped, the index after it)."""
    out: list[str] = []
    i += 1
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            out.append(s[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "".join(out), i


def split_params(value: str) -> tuple[str, list[tuple[str, str]]]:
    """``type/subtype; a=1; b="x y"`` as ("type/subtype", [("a", "1"), ("b", "x y")]), names as written."""
    if '"' not in value and "(" not in value:  # the common case: no quoting, no comment
        head, *rest = value.split(";")
        simple: list[tuple[str, str]] = []
        for item in rest:
            k, eq, v = item.partition("=")
            if eq and k.strip():
                simple.append((k.strip(), v.strip()))
        return head.strip(), simple
    items: list[list[tuple[str, bool]]] = [[]]  # per ';'-separated item: chunks (text, was quoted)
    buf: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch in '"(;':
            items[-1].append(("".join(buf), False))
            buf = []
            if ch == '"':
                q, i = _quoted(value, i)
                items[-1].append((q, True))
            elif ch == "(":
                i = _skip_comment(value, i)  # RFC 2045 §5.1: comments may appear between tokens
            else:
                items.append([])
                i += 1
            continue
        buf.append(ch)
        i += 1
    items[-1].append(("".join(buf), False))
    head = "".join(t for t, q in items[0] if not q).strip()
    params: list[tuple[str, str]] = []
    for chunks in items[1:]:
        name: list[str] = []
        val: list[str] = []
        seen_eq = False
        for t, quoted in chunks:
            if seen_eq:
                val.append(t if quoted else t.strip())
            elif quoted:
                name.append(t)
            elif "=" in t:
                a, _, b = t.partition("=")
                name.append(a)
                val.append(b.strip())
                seen_eq = True
            else:
                name.append(t)
        key = "".join(name).strip()
        if key and seen_eq:
            params.append((key, "".join(val)))
    return head, params


def _rfc2231_decode(value: str, charset: str) -> str:
    data = urllib.parse.unquote_to_bytes(value)
    try:
        return data.decode(charset or "us-ascii")
    except (LookupError, UnicodeDecodeError):
        return text(data)


def collapse_params(params: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """RFC 2231 §3-§4: ``name*0*=utf-8''R%C3%A9; name*1=sultats.pdf`` becomes ``name=Résultats.pdf``."""
    plain: dict[str, tuple[str, str]] = {}  # lower name -> (name as written, value)
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    written: dict[str, str] = {}
    order: list[str] = []
    for name, value in params:
        base, star, rest = name.partition("*")
        key = base.lower()
        if key not in written:
            written[key] = base
            order.append(key)
        if not star:
            plain.setdefault(key, (base, value))
            continue
        if rest == "":  # name*=charset'lang'value
            index, extended = 0, True
        else:
            num, star2, _ = rest.partition("*")
            if not num.isdigit() or len(num) > 4:
                plain.setdefault(key, (base, value))
                continue
            index, extended = int(num), bool(star2)
        sections.setdefault(key, {}).setdefault(index, (value, extended))
    out: list[tuple[str, str]] = []
    for key in order:
        if key in sections:
            secs = sections[key]
            charset = ""
            pieces: list[str] = []
            for n, i in enumerate(sorted(secs)):
                value, extended = secs[i]
                if extended and n == 0 and value.count("'") >= 2:
                    charset, _lang, value = value.split("'", 2)
                pieces.append(_rfc2231_decode(value, charset) if extended else value)
            out.append((written[key], "".join(pieces)))
        elif key in plain:
            out.append(plain[key])
    return tuple(out)


def parse_params(value: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A structured field value: its first item (e.g. ``multipart/mixed``) and its parameters decoded."""
    head, params = split_params(value)
    return head, collapse_params(params)
