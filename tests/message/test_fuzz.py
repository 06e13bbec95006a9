"""Hypothesis against the message model: any bytes, and bytes shaped like MIME, raise nothing but MessageError.

10,000 examples in the suite (5,000 arbitrary, 5,000 grammar-biased); every
derived view (policy content, ENVELOPE, BODYSTRUCTURE, sections, search texts,
attachments, header edits) is computed on each, strict and lenient.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.message import MessageError, ParsedMessage, parse_message, stored
from mailserver.message.imap import ImapMeta
from tests.fuzzing import examples

SETTINGS = settings(max_examples=examples(5_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])

_FIELDS = [
    b"Content-Type: multipart/mixed; boundary=b1",
    b'Content-Type: multipart/alternative; boundary="b 2"',
    b"Content-Type: multipart/digest; boundary=b3",
    b"Content-Type: multipart/related",
    b"Content-Type: message/rfc822",
    b"Content-Type: message/global",
    b"Content-Type: text/plain; charset=utf-8",
    b"Content-Type: text/plain; charset=bogus-charset",
    b"content-type: text/x-MYOWN; Name*0*=utf-8''%C3%A9; Name*1=x; name*99999=y",
    b'Content-Type: application/pdf; name="a\\"b.pdf"',
    b"Content-Type: text/calendar; method=REQUEST",
    b"Content-Type: application/zip; name=x.zip",
    b"Content-Type: /; =; ==",
    b"Content-Disposition: attachment; filename*=iso-8859-1'fr'caf%E9",
    b"Content-Disposition: inline; filename==?utf-8?b?eC5leGU=?=",
    b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: quoted-printable",
    b'From: group: a@b, <c@d>;, e (f) , "g" <@r1,@r2:h@i>',
    b"To: undisclosed-recipients:;",
    b"Cc: ((((( <",
    b'Reply-To: "unterminated',
    b"Subject: =?utf-8?q?R=C3=A9sultats?= =?utf-8?b?eA==?= =?x?q?=ZZ?=",
    b"Subject: R\xc3\xa9sultats \xe9",
    b"Date: Tue, 1 Dec 2026 10:00:00 +0000",
    b"Date: Tue, 99 Foo 99999 99:99:99 +9999",
    b"X-MSS-MES: FIN",
    b"In-Reply-To: <a@b>",
    b" folded continuation",
    b"\tfolded",
    b"no colon here",
    b": empty name",
]
_BODY = [
    b"",
    b"",
    b"--b1",
    b"--b1--",
    b"--b1 ",
    b"--b 2",
    b"--b 2--",
    b"--b3",
    b"--b3--",
    b"--",
    b"QUJDREVG",
    b"UEsDBAoAAAAAAA==",
    b"TVqQAAMAAAAEAAAA",
    b"=C3=A9=",
    b"=",
    b"PK\x03\x04",
    b"\x00\xff\xfe",
    b"BEGIN:VCALENDAR",
]
_LINE = st.one_of(st.sampled_from(_FIELDS), st.sampled_from(_BODY), st.binary(max_size=12))

#: lines drawn from MIME's vocabulary (fields, boundaries of three nesting levels, encodings), joined by one line end
mime_like = st.builds(
    lambda lines, eol: eol.join(lines),
    st.lists(_LINE, max_size=30),
    st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]),
)


def exercise(raw: bytes) -> None:
    try:
        msg: ParsedMessage = parse_message(raw)
    except MessageError:
        msg = stored(raw).prepared()  # what the store shows of it never raises
    _ = msg.content
    meta = msg.imap_meta()
    assert ImapMeta.from_json(meta.to_json()) == meta
    meta.body(extended=False)
    for path in ((), (1,), (2, 1)):
        for text in (None, "MIME", "TEXT", "HEADER.FIELDS"):
            msg.section(path, text, ("subject", "from"))
    msg.search_texts()
    for a in msg.attachments():
        a.decoded()
    edited = msg.prepend(b"Received: x\r\n").add_to_header(b"Date: y\r\n").remove(lambda f: f.key == "from")
    assert edited.imap_meta().structure == meta.structure
    assert edited.raw.endswith(msg.raw[msg.header_end :])


@SETTINGS
@given(st.binary(max_size=2_000))
def test_any_bytes(raw: bytes) -> None:
    exercise(raw)


@SETTINGS
@given(mime_like)
def test_mime_shaped_bytes(raw: bytes) -> None:
    exercise(raw)


@SETTINGS
@given(st.binary(max_size=300), st.binary(max_size=20), st.sampled_from(["base64", "quoted-printable", "8bit"]))
def test_decoding_in_place_matches_decode_body(body: bytes, before: bytes, cte: str) -> None:
    """``mime.decode_range`` (a body decoded where it lies) gives what ``decode_body`` gives for any octets."""
    from mailserver.message import mime

    raw = before + body + b"\r\n--x--"
    assert mime.decode_range(raw, len(before), len(before) + len(body), cte) == mime.decode_body(body, cte)


@SETTINGS
@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n -", max_size=300))
def test_decoding_in_place_matches_decode_body_on_base64_shapes(text: str) -> None:
    from mailserver.message import mime

    body = text.encode()
    assert mime.decode_range(b"H" + body, 1, 1 + len(body), "base64") == mime.decode_body(body, "base64")
