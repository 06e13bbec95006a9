"""BINARY (RFC 3516) through real sockets and TLS with imaplib: FETCH BINARY[part], BINARY.PEEK, BINARY.SIZE
(the part without its content transfer encoding), APPEND of a literal8 ``~{n}``, NO [UNKNOWN-CTE]."""

from __future__ import annotations

import base64
import imaplib

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, crlf, raw_command

BLOB = bytes(range(256)) * 3  # every octet, NUL included
MESSAGE = crlf(
    b"From: a@b.test\n"
    b"To: c@d.test\n"
    b"Subject: binary parts\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b"\n'
    b"\n"
    b"--b\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"caf=C3=A9 cr=C3=A8me\n"
    b"--b\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n" + base64.encodebytes(BLOB) + b"--b\n"
    b"Content-Type: application/octet-stream\n"
    b"Content-Transfer-Encoding: x-uuencode\n"
    b"\n"
    b"begin 644 x\n"
    b"--b--\n"
)


def fetch(m: imaplib.IMAP4_SSL, what: str) -> bytes:
    typ, data = m.fetch("1", what)
    assert typ == "OK", data
    head = data[0]
    assert isinstance(head, tuple), data
    return head[1]


def test_binary_fetches_parts_decoded(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"BINARY" in raw_command(m, "CAPABILITY")[0].split()
    srv.deliver(user, MESSAGE)
    m.select("INBOX")
    assert fetch(m, "(BINARY.PEEK[1])") == "café crème".encode()  # the CRLF before a boundary is the boundary's
    assert fetch(m, "(BINARY.PEEK[2])") == BLOB
    assert fetch(m, "(BINARY.PEEK[2]<256.10>)") == BLOB[256:266]
    assert fetch(m, "(BINARY.PEEK[])") == MESSAGE
    # a literal8 when the octets hold a NUL, a plain literal when not
    lines = raw_command(m, "FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[1] BINARY.SIZE[2])")
    assert f"BINARY[2] ~{{{len(BLOB)}}}".encode() in lines[0]
    assert lines[-2].endswith(f" BINARY.SIZE[1] {len('café crème'.encode())} BINARY.SIZE[2] {len(BLOB)})".encode())
    assert b"BINARY[1] {12}" in raw_command(m, "FETCH 1 (BINARY.PEEK[1])")[0]
    assert m.fetch("1", "(FLAGS)")[1][0] is not None and b"\\Seen" not in m.fetch("1", "(FLAGS)")[1][0]
    # a part whose encoding cannot be undone
    refused = raw_command(m, "FETCH 1 (BINARY.PEEK[3])")[-1]
    assert b"NO [UNKNOWN-CTE]" in refused
    assert fetch(m, "(BODY.PEEK[3])") == b"begin 644 x"
    # BINARY (not PEEK) sets \Seen, as BODY does
    fetch(m, "(BINARY[1])")
    assert b"\\Seen" in m.fetch("1", "(FLAGS)")[1][0]


def test_append_of_a_literal8(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    raw = (
        crlf(
            b"From: a@b.test\nTo: c@d.test\nSubject: raw octets\nMIME-Version: 1.0\n"
            b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n"
        )
        + b"\x00\x01\x02 binary \xff\x00"
    )
    lines = raw_command(m, b"APPEND INBOX (\\Seen) ~{%d+}\r\n" % len(raw) + raw)
    assert b"OK [APPENDUID" in lines[-1], lines
    m.select("INBOX")
    assert fetch(m, "(BODY.PEEK[])") == raw
    assert fetch(m, "(BINARY.PEEK[1])") == b"\x00\x01\x02 binary \xff\x00"
    assert raw_command(m, "FETCH 1 (BINARY.SIZE[1])")[0].endswith(b"BINARY.SIZE[1] 13)")


def test_parse_binary_items() -> None:
    (f,) = parse(b"a UID FETCH 1:* (BINARY.PEEK[1.2]<0.100> BINARY[] BINARY.SIZE[3])\r\n")
    assert isinstance(f, c.Fetch)
    assert f.items[:3] == (
        c.FetchBinary((1, 2), peek=True, partial=(0, 100)),
        c.FetchBinary(()),
        c.FetchBinary((3,), size=True),
    )
    assert parse(c.to_wire(f)) == [f]
    (a,) = parse(b"a APPEND INBOX ~{3+}\r\n\x00\x01\x02\r\n")
    assert isinstance(a, c.Append) and a.message == b"\x00\x01\x02"
