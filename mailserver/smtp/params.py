"""MAIL and RCPT arguments: the path and the ESMTP parameters, parsed into values (no I/O).

Invariants:
- A path is ``<>`` (MAIL only: the null reverse-path of bounces), ``<mailbox>``,
  ``<@route,@route:mailbox>`` (the source route is ignored, RFC 5321 §4.1.2 and
  appendix C), or, leniently, a bare mailbox without angle brackets.
- A mailbox is a dot-string or quoted-string local part, ``@``, and a domain or
  an address literal. Non-ASCII is accepted only with SMTPUTF8 (RFC 6531 §3.3).
- Every parameter keyword is recognised or refused with ``555 5.5.4``; a
  parameter given twice is a syntax error. Values are decoded (xtext, RFC 3461 §4).
- A decoded ENVID or ORCPT holds no control character (C0, DEL, C1): RFC 3461
  §4 makes xtext printable and these values are written into DSN header
  fields, where ``+0D+0A`` would start a new field. Such a value is refused
  with ``501 5.5.4`` and a sentence.

See Also: RFC 5321 §4.1.2 (paths), RFC 1870 (SIZE), RFC 6152 (8BITMIME),
RFC 6531 (SMTPUTF8), RFC 3461 (DSN: RET, ENVID, NOTIFY, ORCPT), RFC 4954 §5 (AUTH=).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailserver.smtp import replies as R
from policies.reply import Reply

NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
MAX_ENVID = 100  # RFC 3461 §4.4
MAX_ORCPT = 500  # RFC 3461 §4.2

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_UTF8 = r"\u0080-\U0010ffff"
_QTEXT = r"\x20\x21\x23-\x5b\x5d-\x7e"


def _mailbox_re(utf8: bool) -> re.Pattern[str]:
    extra = _UTF8 if utf8 else ""
    atom = f"[{_ATEXT}{extra}]+"
    quoted = rf'"(?:[{_QTEXT}{extra}]|\\[\x20-\x7e])*"'
    label = rf"[A-Za-z0-9{extra}](?:[A-Za-z0-9{extra}\-]*[A-Za-z0-9{extra}])?"
    domain = rf"{label}(?:\.{label})*"
    literal = r"\[[\x21-\x5a\x5e-\x7e]+\]"
    return re.compile(rf"(?:{atom}(?:\.{atom})*|{quoted})@(?:{domain}|{literal})\Z")


_MAILBOX_ASCII = _mailbox_re(False)
_MAILBOX_UTF8 = _mailbox_re(True)
_ROUTE = re.compile(r"@[^,:]+(?:,@[^,:]+)*:")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")


class ParamError(Exception):
    """A MAIL or RCPT argument that cannot be used; carries the reply to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None  # RFC 1870 SIZE: the client's estimate
    body_8bit: bool = False  # RFC 6152 BODY=8BITMIME
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # RFC 3461 RET: FULL or HDRS
    envid: str | None = None  # RFC 3461 ENVID, xtext-decoded


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: frozenset[str] | None = None  # RFC 3461 NOTIFY: {"NEVER"} or a subset of NOTIFY_VALUES
    orcpt: str | None = None  # RFC 3461 ORCPT, "addr-type;address" with the address xtext-decoded

    @property
    def notify_text(self) -> str | None:
        if self.notify is None:
            return None
        order = ("NEVER", "SUCCESS", "FAILURE", "DELAY")
        return ",".join(n for n in order if n in self.notify)

    def wants(self, what: str) -> bool:
        """Does the sender want a DSN for ``what`` (SUCCESS, FAILURE, DELAY)? Without NOTIFY:
        failures only (RFC 3461 §4.1: the default is FAILURE, and DELAY at the MTA's choice: no)."""
        if self.notify is None:
            return what == "FAILURE"
        return what in self.notify


# --- xtext (RFC 3461 §4) --------------------------------------------------------------------------------------


def xtext_decode(text: str) -> str:
    """xtext to text: ``+XX`` is an octet; the octets are read as UTF-8 (RFC 6533 §3 for non-ASCII)."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "+":
            h = text[i + 1 : i + 3]
            if len(h) != 2 or not all(ch in "0123456789ABCDEFabcdef" for ch in h):
                raise ValueError("bad xtext escape")
            out.append(int(h, 16))
            i += 3
            continue
        if not ("!" <= c <= "~") or c == "=":
            raise ValueError("bad xtext character")
        out.append(ord(c))
        i += 1
    return out.decode("utf-8", "replace")


def has_control(text: str) -> bool:
    """Does ``text`` hold a control character (C0 including CR, LF, NUL and HT; DEL; C1)?"""
    return any(c < " " or "\x7f" <= c <= "\x9f" for c in text)


def _printable(value: str, name: str) -> str:
    if has_control(value):
        raise ParamError(R.CONTROL_IN_PARAMETER.with_text(f"{name} holds control characters (CR, LF, NUL...): refused"))
    return value


def xtext_encode(text: str) -> str:
    """Text to xtext: every octet outside ``!``..``~``, and ``+`` and ``=``, as ``+XX``."""
    return "".join(c if ("!" <= c <= "~" and c not in "+=") else "".join(f"+{b:02X}" for b in c.encode()) for c in text)


# --- paths ----------------------------------------------------------------------------------------------------


def split_path(arg: str) -> tuple[str, str]:
    """(the path, the parameters after it) from what follows ``FROM:``/``TO:``."""
    s = arg.lstrip()
    if s.startswith("<"):
        in_quote = escaped = False
        for i, c in enumerate(s):
            if escaped:
                escaped = False
            elif c == "\\" and in_quote:
                escaped = True
            elif c == '"':
                in_quote = not in_quote
            elif c == ">" and not in_quote:
                return s[: i + 1], s[i + 1 :].strip()
        raise ParamError(R.MAIL_SYNTAX)
    path, _, rest = s.partition(" ")
    return path, rest.strip()


def parse_mailbox(path: str, *, smtputf8: bool, null_ok: bool, bad: Reply) -> str:
    """The mailbox in ``path`` (``""`` for ``<>`` when ``null_ok``); ParamError(bad) otherwise."""
    inner = path[1:-1] if path.startswith("<") and path.endswith(">") else path
    if inner == "":
        if null_ok and path == "<>":
            return ""
        raise ParamError(bad)
    route = _ROUTE.match(inner)
    if route:
        inner = inner[route.end() :]
    if not inner.isascii() and not smtputf8:
        raise ParamError(R.EIGHTBIT_WITHOUT_SMTPUTF8)
    if len(inner) > 320 or not (_MAILBOX_UTF8 if smtputf8 else _MAILBOX_ASCII).match(inner):
        raise ParamError(bad)
    return inner


# --- parameters -----------------------------------------------------------------------------------------------


def _pairs(text: str) -> list[tuple[str, str | None]]:
    pairs: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for token in text.split():
        key, eq, value = token.partition("=")
        if not _KEYWORD.match(key) or (eq and not value):
            raise ParamError(R.BAD_PARAMETER.with_text(f"Malformed parameter {token[:40]!r}"))
        key = key.upper()
        if key in seen:
            raise ParamError(R.BAD_PARAMETER.with_text(f"Parameter {key} given twice"))
        seen.add(key)
        pairs.append((key, value if eq else None))
    return pairs


def _unknown(key: str) -> ParamError:
    return ParamError(R.BAD_PARAMETER.with_text(f"Parameter {key} not recognised or not implemented"))


def parse_mail_params(text: str, *, size_limit: int | None) -> MailParams:
    size: int | None = None
    body_8bit = smtputf8 = False
    ret: str | None = None
    envid: str | None = None
    for key, value in _pairs(text):
        if key == "SIZE":  # RFC 1870 §6
            if value is None or not value.isdigit() or len(value) > 20:
                raise ParamError(R.BAD_PARAMETER.with_text("SIZE takes a number of octets"))
            size = int(value)
            if size_limit and size > size_limit:
                raise ParamError(R.message_too_big(size_limit))
        elif key == "BODY":  # RFC 6152
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise ParamError(R.BAD_PARAMETER.with_text("BODY is 7BIT or 8BITMIME (BINARYMIME is not offered)"))
            body_8bit = value.upper() == "8BITMIME"
        elif key == "SMTPUTF8":  # RFC 6531 §3.4
            if value is not None:
                raise ParamError(R.BAD_PARAMETER.with_text("SMTPUTF8 takes no value"))
            smtputf8 = True
        elif key == "RET":  # RFC 3461 §4.3
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise ParamError(R.BAD_PARAMETER.with_text("RET is FULL or HDRS"))
            ret = value.upper()
        elif key == "ENVID":  # RFC 3461 §4.4
            try:
                envid = xtext_decode(value or "")
            except ValueError:
                raise ParamError(R.BAD_PARAMETER.with_text("ENVID must be xtext")) from None
            if not envid or len(value or "") > MAX_ENVID:
                raise ParamError(R.BAD_PARAMETER.with_text(f"ENVID is 1 to {MAX_ENVID} characters of xtext"))
            _printable(envid, "ENVID")
        elif key == "AUTH":  # RFC 4954 §5: accepted, and not trusted
            continue
        else:
            raise _unknown(key)
    return MailParams(size, body_8bit, smtputf8, ret, envid)


def parse_rcpt_params(text: str) -> RcptParams:
    notify: frozenset[str] | None = None
    orcpt: str | None = None
    for key, value in _pairs(text):
        if key == "NOTIFY":  # RFC 3461 §4.1
            items = frozenset(v.strip().upper() for v in (value or "").split(","))
            if items != {"NEVER"} and not (items and items <= NOTIFY_VALUES):
                raise ParamError(R.BAD_PARAMETER.with_text("NOTIFY is NEVER, or a list of SUCCESS, FAILURE, DELAY"))
            notify = items
        elif key == "ORCPT":  # RFC 3461 §4.2
            addr_type, semi, xaddr = (value or "").partition(";")
            if not semi or not _KEYWORD.match(addr_type) or not xaddr or len(value or "") > MAX_ORCPT:
                raise ParamError(R.BAD_PARAMETER.with_text("ORCPT is addr-type;xtext, e.g. rfc822;name@domain"))
            try:
                orcpt = f"{addr_type.lower()};{_printable(xtext_decode(xaddr), 'ORCPT')}"
            except ValueError:
                raise ParamError(R.BAD_PARAMETER.with_text("ORCPT address must be xtext")) from None
        else:
            raise _unknown(key)
    return RcptParams(notify, orcpt)
