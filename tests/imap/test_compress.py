"""COMPRESS=DEFLATE (RFC 4978) through real sockets and TLS, with a client that really inflates and deflates.

imaplib has no COMPRESS: ``DeflateIMAP`` sends COMPRESS DEFLATE, then wraps every read and write of its TLS
socket in raw deflate (wbits -15), counting the octets on the wire.
"""

from __future__ import annotations

import imaplib
import socket
import ssl
import threading
import zlib
from collections.abc import Iterator

import pytest

from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import HOST, TIMEOUT, ServerThread, message, raw_command


class DeflateIMAP(imaplib.IMAP4_SSL):
    """imaplib over a TLS socket whose octets are deflated once ``compress()`` succeeded."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        self._out: zlib._Compress | None = None
        self._in: zlib._Decompress | None = None
        self._clear = b""
        self.wire_in = 0
        return super()._create_socket(timeout)

    def compress(self) -> tuple[str, list[bytes]]:
        imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))
        typ, data = self._simple_command("COMPRESS", "DEFLATE")
        if typ == "OK":  # the OK was the last line in clear; nothing else was sent after it
            self._out = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._in = zlib.decompressobj(-15)
        return typ, data

    def send(self, data: bytes) -> None:
        if self._out is not None:
            data = self._out.compress(data) + self._out.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _fill(self) -> None:
        assert self._in is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("socket closed")
        self.wire_in += len(chunk)
        self._clear += self._in.decompress(chunk)

    def read(self, size: int) -> bytes:
        if self._in is None:
            return super().read(size)
        while len(self._clear) < size:
            self._fill()
        out, self._clear = self._clear[:size], self._clear[size:]
        return out

    def readline(self) -> bytes:
        if self._in is None:
            return super().readline()
        while b"\n" not in self._clear:
            self._fill()
        i = self._clear.index(b"\n") + 1
        out, self._clear = self._clear[:i], self._clear[i:]
        return out


@pytest.fixture
def z(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> Iterator[DeflateIMAP]:
    client = DeflateIMAP(HOST, srv.port("imaps"), ssl_context=tls_client, timeout=TIMEOUT)
    client.login(user.address, support.PASSWORD)
    yield client
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def test_compress_deflate_both_ways(srv: ServerThread, z: DeflateIMAP, user: Account) -> None:
    assert b"COMPRESS=DEFLATE" in raw_command(z, "CAPABILITY")[0].split()
    assert z.compress() == ("OK", [b"DEFLATE active"])
    body = "Compte rendu de consultation, ligne répétée.\n" * 2000
    raw = message("a@b.test", user.address, "long report", body)
    typ, data = z.append("INBOX", "", None, raw)  # deflated on the way in
    assert typ == "OK" and data[0].startswith(b"[APPENDUID "), data
    z.select("INBOX")
    before = z.wire_in
    typ, got = z.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and got[0][1] == raw  # type: ignore[index]
    assert z.wire_in - before < len(raw) // 10  # what crossed the wire was deflated
    # once is enough
    assert (
        raw_command(z, "COMPRESS DEFLATE")[-1].split(b" ", 1)[1]
        == b"NO [COMPRESSIONACTIVE] Compression is already active"
    )
    assert z.noop()[0] == "OK"


def test_idle_pushes_through_the_deflate_stream(srv: ServerThread, z: DeflateIMAP, user: Account) -> None:
    assert z.compress()[0] == "OK"
    z.select("INBOX")
    tag = z._new_tag()  # type: ignore[attr-defined]
    z.send(tag + b" IDLE\r\n")
    assert z.readline().startswith(b"+ ")
    threading.Thread(target=srv.deliver, args=(user, message("a@b.test", user.address, "while idle"))).start()
    assert z.readline() == b"* 1 EXISTS\r\n"
    z.send(b"DONE\r\n")
    lines = [z.readline()]
    while not lines[-1].startswith(tag):
        lines.append(z.readline())
    assert lines[-1] == tag + b" OK IDLE terminated\r\n"


def test_compress_needs_login_and_deflate(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls_client, timeout=TIMEOUT)
    try:
        assert b" BAD " in raw_command(m, "COMPRESS DEFLATE")[-1]
        m.login(user.address, support.PASSWORD)
        assert b"NO [CANNOT]" in raw_command(m, "COMPRESS GZIP")[-1]
        assert m.noop()[0] == "OK"  # still in clear
    finally:
        m.logout()


def test_a_command_deflated_right_after_compress_is_read(srv: ServerThread, z: DeflateIMAP) -> None:
    """A client that deflates from the octet after its COMPRESS line on, without waiting for the OK."""
    out = zlib.compressobj(6, zlib.DEFLATED, -15)
    z.sock.sendall(b"c1 COMPRESS DEFLATE\r\n" + out.compress(b"c2 NOOP\r\n") + out.flush(zlib.Z_SYNC_FLUSH))
    assert z.file.readline() == b"c1 OK DEFLATE active\r\n"
    z._out, z._in = out, zlib.decompressobj(-15)
    assert z.readline() == b"c2 OK NOOP completed\r\n"
