"""Mailbox names and patterns alone (protocol.names): LIST, LSUB, and the names CREATE refuses.

RFC 3501 §6.3.8 (LIST, ``*`` and ``%``), §6.3.9 (LSUB: with ``%``, an unsubscribed
superior of a subscribed name is listed ``\\Noselect``; nothing else unsubscribed is).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mailserver import mailboxes
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.names import (
    DELIMITER,
    canonical_pattern,
    hierarchy_refusal,
    list_responses,
    lsub_responses,
    matcher,
)


@dataclass(frozen=True)
class Box:
    name: str
    subscribed: bool = False
    special_use: str | None = None


def lines(responses: list) -> list[bytes]:  # type: ignore[type-arg]
    return [x.to_bytes().rstrip(b"\r\n") for x in responses]


def test_the_core_and_the_store_share_one_delimiter() -> None:
    assert DELIMITER == mailboxes.DELIMITER


@pytest.mark.parametrize(
    ("reference", "pattern", "name", "matches"),
    [
        ("", "*", "a/b/c", True),
        ("", "%", "a", True),
        ("", "%", "a/b", False),
        ("", "a/%", "a/b", True),
        ("", "a/%", "a/b/c", False),
        ("a/", "%", "a/b", True),
        ("", "inbox", "INBOX", True),
        ("", "Inbox/%", "INBOX/x", True),
        ("", "a.b", "a.b", True),
        ("", "a.b", "axb", False),  # no regular expression leaks through
        ("", "(*)", "(x)", True),
        ("", "%/c", "a/b/c", False),
        ("", "*/c", "a/b/c", True),
    ],
)
def test_pattern_matching(reference: str, pattern: str, name: str, matches: bool) -> None:
    assert bool(matcher(reference, pattern).fullmatch(name)) is matches


def test_canonical_pattern() -> None:
    assert canonical_pattern("inBox") == "INBOX"
    assert canonical_pattern("inbox/sub") == "INBOX/sub"
    assert canonical_pattern("inboxes") == "inboxes"


def test_list_attributes_children_special_use_and_subscribed() -> None:
    boxes = [Box("Sent", True, "\\Sent"), Box("a"), Box("a/b", True), Box("INBOX", True)]
    assert lines(list_responses(boxes, c.List("t", "", ("*",)))) == [
        b'* LIST (\\HasNoChildren) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"',
        b'* LIST (\\HasChildren) "/" "a"',
        b'* LIST (\\HasNoChildren) "/" "a/b"',
    ]
    assert lines(list_responses(boxes, c.List("t", "", ("%",), ("SUBSCRIBED",)))) == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
    ]
    assert lines(list_responses(boxes, c.List("t", "", ("",)))) == [b'* LIST (\\Noselect) "/" ""']
    assert lines(list_responses([Box("Été")], c.List("t", "", ("*",)))) == [
        b'* LIST (\\HasNoChildren) "/" "&AMk-t&AOk-"'
    ]


def test_lsub_with_percent_lists_unsubscribed_superiors_as_noselect() -> None:
    boxes = [Box("a"), Box("a/b"), Box("a/b/c", True), Box("x", True), Box("lonely"), Box("q/r/s", True)]
    assert lines(lsub_responses(boxes, c.Lsub("t", "", "a/%"))) == [b'* LSUB (\\Noselect) "/" "a/b"']
    assert lines(lsub_responses(boxes, c.Lsub("t", "", "%"))) == [
        b'* LSUB (\\Noselect) "/" "a"',
        b'* LSUB (\\Noselect) "/" "q"',
        b'* LSUB () "/" "x"',
    ]
    # "*" reaches the subscribed names themselves: their superiors are not listed
    assert lines(lsub_responses(boxes, c.Lsub("t", "", "*"))) == [
        b'* LSUB () "/" "a/b/c"',
        b'* LSUB () "/" "q/r/s"',
        b'* LSUB () "/" "x"',
    ]
    assert lines(lsub_responses(boxes, c.Lsub("t", "", "lonely"))) == []  # neither subscribed nor superior
    assert lines(lsub_responses(boxes, c.Lsub("t", "a/", "b"))) == [b'* LSUB (\\Noselect) "/" "a/b"']
    assert lines(lsub_responses(boxes, c.Lsub("t", "", ""))) == [b'* LSUB (\\Noselect) "/" ""']


def test_a_subscribed_superior_is_listed_plainly() -> None:
    boxes = [Box("a", True), Box("a/b", True)]
    assert lines(lsub_responses(boxes, c.Lsub("t", "", "%"))) == [b'* LSUB () "/" "a"']


@pytest.mark.parametrize("name", ["../x", "a/../b", "./x", "a/.", "~", "~/mail", "#user/bob", "#shared"])
def test_names_outside_the_personal_hierarchy_are_refused(name: str) -> None:
    assert hierarchy_refusal(name) is not None


@pytest.mark.parametrize("name", ["a", "a/b", "x.y", "..hidden", "a~b", "Projets/#42", "Été"])
def test_ordinary_names_are_accepted(name: str) -> None:
    assert hierarchy_refusal(name) is None
