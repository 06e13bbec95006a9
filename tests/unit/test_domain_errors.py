"""Domain errors name no protocol; the IMAP side alone gives each its response code (pymap's get_response)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mailserver import errors as e
from mailserver.imap.errors import CODES, response_code
from mailserver.imap.protocol import responses as r

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (e.MailboxNotFound("Projets"), "NONEXISTENT"),
        (e.MailboxNotFound("Projets", try_create=True), "TRYCREATE"),
        (e.MailboxExists("Mailbox 'Projets' already exists"), "ALREADYEXISTS"),
        (e.MailboxCannot("INBOX cannot be deleted"), "CANNOT"),
        (e.MailboxHasChildren("Projets has mailboxes under it"), "HASCHILDREN"),
        (e.ReadOnly("The mailbox is selected read-only (EXAMINE)"), "READ-ONLY"),
        (e.TooBig("Message too big"), "TOOBIG"),
        (e.Refused("Attachments of this type are not accepted"), "CANNOT"),
        (e.Unreadable("This message's data cannot be read"), "CORRUPTION"),
        (e.AccountGone("This account no longer exists"), "UNAVAILABLE"),
        (e.MailboxGone("The selected mailbox was deleted"), None),
        (e.MailError("No reason to give a code"), None),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, e.MailError) else str(v),
)
def test_each_domain_error_becomes_its_tagged_no(error: e.MailError, code: str | None) -> None:
    assert response_code(error) == code
    line = r.Tagged("a1", "NO", error.text, response_code(error)).to_bytes()
    assert line == f"a1 NO {f'[{code}] ' if code else ''}{error.text}\r\n".encode()


def test_a_subclass_inherits_its_parents_code() -> None:
    class NameTooLong(e.MailboxCannot):
        pass

    assert response_code(NameTooLong("A mailbox name is at most 500 characters")) == "CANNOT"


def test_every_error_class_is_mapped_or_deliberately_plain() -> None:
    classes = {c for c in vars(e).values() if isinstance(c, type) and issubclass(c, e.MailError)}
    plain = {e.MailError, e.MailboxGone, e.MailboxNotFound, e.BadUrl}  # no code, or one chosen per instance
    assert classes - plain == set(CODES)


def test_the_domain_errors_know_no_protocol() -> None:
    tree = ast.parse((ROOT / "mailserver" / "errors.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__"}
    source = (ROOT / "mailserver" / "errors.py").read_text()
    for code in {*CODES.values(), "TRYCREATE", "NONEXISTENT"}:
        assert f'"{code}"' not in source
