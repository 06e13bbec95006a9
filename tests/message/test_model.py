"""The message model on real mail shapes: MIME bounds, boundaries, RFC 2231, groups, UTF-8 headers, header edits."""

from __future__ import annotations

import pytest

from mailserver.message import (
    MAX_DEPTH,
    MAX_PARTS,
    MessageTooComplex,
    ParsedMessage,
    parse_message,
    stored,
)
from mailserver.message import mime as M
from mailserver.message.addresses import GroupEnd, GroupStart, Mailbox, parse_addresses
from mailserver.message.headers import decode_words, parse_params
from mailserver.message.imap import ImapMeta, MultiPart
from tests.directory.messages import with_attachments, xdm_zip

PDF = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def nested(depth: int) -> bytes:
    """``depth`` multiparts, each holding the next."""
    head = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(1, depth)
    )
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in range(depth - 1, 0, -1))
    return (
        b"From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
        + head
        + b"--b%d\r\nContent-Type: text/plain\r\n\r\nfond\r\n--b%d--\r\n" % (depth, depth)
        + tail
    )


def many_parts(n: int) -> bytes:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(n))
    return b"Content-Type: multipart/mixed; boundary=p\r\n\r\n" + parts + b"--p--\r\n"


# --- bounds ----------------------------------------------------------------------------------------------------


def test_depth_bound() -> None:
    ok = parse_message(nested(MAX_DEPTH))
    assert ok.imap_meta().structure is not None
    with pytest.raises(MessageTooComplex, match="levels deep"):
        parse_message(nested(MAX_DEPTH + 1))
    with pytest.raises(MessageTooComplex):
        parse_message(nested(5000))  # never a RecursionError
    # a message already stored is always shown: the deep rest is one opaque part
    node = stored(nested(5000)).imap_meta().structure
    levels = 0
    while isinstance(node, MultiPart):
        node, levels = node.parts[0], levels + 1
    assert levels == MAX_DEPTH and node.type == "multipart"  # the opaque rest, shown as what it says it is


def test_parts_bound() -> None:
    assert len(parse_message(many_parts(MAX_PARTS - 2)).root.children) == MAX_PARTS - 2
    with pytest.raises(MessageTooComplex, match="parts"):
        parse_message(many_parts(MAX_PARTS + 1))
    assert len(stored(many_parts(MAX_PARTS + 1)).root.children) < MAX_PARTS


# --- MIME as real mail writes it -------------------------------------------------------------------------------


def test_quoted_boundary_with_a_space_and_case_kept() -> None:
    raw = (
        b'From: a@x.test\r\nContent-Type: Multipart/Mixed; boundary="foo bar"\r\n\r\npreamble\r\n'
        b"--foo bar\r\nContent-Type: text/plain; Charset=UTF-8\r\n\r\nbonjour\r\n"
        b'--foo bar \r\nContent-Type: application/x-MYOWN; Name="Mon Fichier.bin"\r\n\r\nxyz\r\n'
        b"--foo bar--\r\nepilogue\r\n"
    )
    msg = parse_message(raw)
    bs = msg.imap_meta().body(extended=True)
    assert bs[0][:7] == ["text", "plain", ["Charset", "UTF-8"], None, None, "7bit", 7]
    assert bs[1][:7] == ["application", "x-MYOWN", ["Name", "Mon Fichier.bin"], None, None, "7bit", 3]
    assert bs[2:4] == ["Mixed", ["boundary", "foo bar"]]
    assert msg.section((1,), None) == b"bonjour"
    assert msg.section((2,), None) == b"xyz"
    assert msg.section((2,), "MIME").startswith(b"Content-Type: application/x-MYOWN")


def test_rfc2231_parameters() -> None:
    head, params = parse_params(
        "attachment; filename*0*=UTF-8''R%C3%A9sultats%20; filename*1=\"du labo\"; filename*2*=%2Epdf; size=42"
    )
    assert head == "attachment"
    assert params == (("filename", "Résultats du labo.pdf"), ("size", "42"))
    assert parse_params("text/plain; title*=iso-8859-1'fr'caf%E9")[1] == (("title", "café"),)
    assert parse_params('a/b; x="quoted \\" ; semi"; y=2')[1] == (("x", 'quoted " ; semi'), ("y", "2"))
    assert parse_params("a/b (comment); k=v (another)")[1] == (("k", "v"),)


def test_encoded_words() -> None:
    assert decode_words("=?utf-8?q?R=C3=A9sultats?= =?utf-8?b?IGR1IGxhYm8=?=") == "Résultats du labo"
    assert decode_words("=?unknown-charset?q?x?=") == "=?unknown-charset?q?x?="
    assert decode_words("plain   text") == "plain text"


def test_group_syntax() -> None:
    items = parse_addresses('group: g1@d1.org, "Dr. G2" <g2@d2.org>;, solo@x.test, empty:;')
    assert items == [
        GroupStart("group"),
        Mailbox(None, None, "g1", "d1.org"),
        Mailbox("Dr. G2", None, "g2", "d2.org"),
        GroupEnd(),
        Mailbox(None, None, "solo", "x.test"),
        GroupStart("empty"),
        GroupEnd(),
    ]
    raw = b"From: a@x.test\r\nTo: group: g1@d1.org, g2@d2.org;\r\nCc: undisclosed-recipients:;\r\n\r\nx\r\n"
    env = parse_message(raw).imap_meta().envelope.value()
    assert env[5] == [
        [None, None, "group", None],
        [None, None, "g1", "d1.org"],
        [None, None, "g2", "d2.org"],
        [None, None, None, None],
    ]
    assert env[6] == [[None, None, "undisclosed-recipients", None], [None, None, None, None]]


def test_utf8_headers_stay_utf8() -> None:
    raw = "From: Éloïse <eloise@x.test>\r\nSubject: Résultats d'analyse\r\n\r\ncorps\r\n".encode()
    msg = parse_message(raw)
    env = msg.imap_meta().envelope
    assert env.subject == "Résultats d'analyse"
    assert env.from_ is not None and env.from_[0].name == "Éloïse"
    assert msg.content.subject == "Résultats d'analyse"
    latin1 = parse_message(b"Subject: caf\xe9\r\n\r\nx\r\n")
    assert latin1.get("subject") == "café"  # not UTF-8: Latin-1, never U+FFFD
    assert "\ufffd" not in latin1.imap_meta().envelope.value()[1]


def test_attachments_and_calendar_parts() -> None:
    ics = b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    raw = with_attachments(
        "dr@x.test",
        "p@y.test",
        "RDV",
        [
            ("cr.pdf", "application/pdf", PDF),
            ("invite.ics", "text/calendar", ics),
            ("XDM.ZIP", "application/zip", xdm_zip("1" * 15)),
        ],
    )
    msg = parse_message(raw)
    files = {a.filename: a for a in msg.attachments()}
    assert set(files) == {"cr.pdf", "invite.ics", "XDM.ZIP"}
    assert files["cr.pdf"].decoded() == PDF and files["cr.pdf"].content_type == "application/pdf"
    assert [c.decoded() for c in msg.calendar_parts()] == [ics]
    assert msg.content.xdm_patient_ids == ("1" * 15, "1" * 15)


# --- header edits without a reparse ----------------------------------------------------------------------------


def test_header_edits_share_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = many_parts(3).replace(b"Content-Type: multipart", b"From: a@x.test\r\nContent-Type: multipart", 1)
    msg = parse_message(raw)
    calls: list[bytes] = []
    real = M.parse_tree
    monkeypatch.setattr(M, "parse_tree", lambda r, **kw: calls.append(r) or real(r, **kw))
    edited = (
        msg.prepend(b"Received: by us\r\n")
        .add_to_header(b"Message-ID: <1@us>\r\n", b"Date: Tue, 1 Dec 2026 10:00:00 +0000\r\n")
        .remove(lambda f: f.key == "from")
    )
    assert calls == []
    assert edited.raw.startswith(b"Received: by us\r\nContent-Type: multipart/mixed; boundary=p\r\nMessage-ID: <1@us>")
    assert edited.section((2,), None) == b"1"
    assert edited.section((), "HEADER") == edited.header and edited.header.endswith(b"+0000\r\n\r\n")
    env = edited.imap_meta().envelope
    assert env.message_id == "<1@us>" and env.from_ is None
    assert edited.imap_meta().body(extended=False) == parse_message(edited.raw).imap_meta().body(extended=False)
    assert ParsedMessage.parse(b"Subject: x").add_to_header(b"Date: d\r\n").raw == b"Subject: x\r\nDate: d\r\n\r\n"


# --- stored meta -----------------------------------------------------------------------------------------------


def test_meta_round_trip_and_version_2() -> None:
    raw = with_attachments("Dr <dr@x.test>", "p@y.test", "CR", [("cr.pdf", "application/pdf", PDF)])
    meta = parse_message(raw).imap_meta()
    assert ImapMeta.from_json(meta.to_json()) == meta
    v2 = {
        "v": 2,
        "headers": {"subject": "CR", "from": "dr@x.test"},
        "envelope": [None, "CR", [["Dr", None, "dr", "x.test"]], None, None, None, None, None, None, None],
        "body": ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 3, 1],
        "bodystructure": ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 3, 1, None, None, None, None],
        "search": {"from": "dr@x.test", "to": "", "cc": "", "bcc": "", "subject": "CR"},
        "sent": "2026-11-23",
    }
    old = ImapMeta.from_json(v2)
    assert old is not None
    assert old.body(extended=False) == v2["body"] and old.body(extended=True) == v2["bodystructure"]
    assert old.envelope.value() == v2["envelope"] and old.has("from") and not old.has("to")
    assert ImapMeta.from_json({"v": 1}) is None


@pytest.mark.parametrize(
    "body",
    [
        b"QUJD\r\nREVG\r\n",  # line breaks
        b"QUJDRA==\r\n",  # padding at the end
        b"QUJDRA=\r\n",  # padding short
        b"QUJDRA\r\n",  # padding missing
        b"QUJDR\r\n",  # one octet past a quantum
        b"QQ==QUJD\r\n",  # padding inside: a second encoded chunk
        b"QU*JD\x80RE!VG",  # junk between the letters
        b"",
        b"====",
    ],
)
def test_decoding_in_place_gives_what_decode_body_gives(body: bytes) -> None:
    """``decode_range`` reads a base64 body in place (no copy of a 49 MB attachment), decoding as ``decode_body``."""
    raw = b"Subject: x\r\n\r\n" + body + b"--end"
    start, end = len(raw) - len(body) - 5, len(raw) - 5
    for cte in ("base64", "BASE64", "quoted-printable", "7bit"):
        assert M.decode_range(raw, start, end, cte) == M.decode_body(body, cte)
