"""SMTP AUTH PLAIN through the shared RFC 4616 decoder (mailserver.sasl), with smtplib over STARTTLS.

- A well-formed response logs in, with or without the initial response (RFC 4954 §4).
- An authzid naming someone else is refused 535; a malformed message gets 501
  with the decoder's reason; the session goes on after either.
"""

from __future__ import annotations

import base64

import pytest

from tests import support
from tests.smtp.conftest import PRO
from tests.smtp.harness import ServerThread, submission


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_logs_in_with_and_without_initial_response(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki)
    code, _ = s.docmd("AUTH", "PLAIN " + b64(f"\0{PRO}\0{support.PASSWORD}".encode()))
    assert code == 235
    s.quit()
    s = submission(site, pki)
    assert s.docmd("AUTH", "PLAIN")[0] == 334
    assert s.docmd(b64(f"{PRO}\0{PRO}\0{support.PASSWORD}".encode()))[0] == 235
    s.quit()


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (f"{PRO}\0{support.PASSWORD}".encode(), "authzid NUL user NUL password"),
        (f"\0{PRO}\0".encode(), "The password is empty"),
        (b"\0\xff\xfe\0pw", "The user name is not UTF-8"),
        (b"\0" + b"u" * 300 + b"\0pw", "longer than 255 octets"),
    ],
)
def test_malformed_plain_is_501_with_the_reason(
    site: ServerThread, pki: support.TestPKI, message: bytes, why: str
) -> None:
    s = submission(site, pki)
    code, text = s.docmd("AUTH", "PLAIN " + b64(message))
    assert code == 501 and text.decode().startswith("5.5.2 ") and why in text.decode()
    assert s.docmd("NOOP")[0] == 250
    s.quit()


def test_acting_as_another_user_is_535(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki)
    code, _ = s.docmd("AUTH", "PLAIN " + b64(f"someone@else.test\0{PRO}\0{support.PASSWORD}".encode()))
    assert code == 535
    assert s.docmd("NOOP")[0] == 250
    s.quit()
