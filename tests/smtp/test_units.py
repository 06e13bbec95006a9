"""The SMTP side's pure parts, byte by byte: paths and parameters, xtext, header work, DSNs, DKIM, replies."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import dkim as dkimlib
from mailserver.smtp import dsn
from mailserver.smtp import message as M
from mailserver.smtp import replies as R
from mailserver.smtp.params import (
    MailParams,
    ParamError,
    RcptParams,
    parse_mail_params,
    parse_mailbox,
    parse_rcpt_params,
    split_path,
    xtext_decode,
    xtext_encode,
)

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)


# --- paths --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "path", "rest"),
    [
        ("<a@b.test>", "<a@b.test>", ""),
        (" <a@b.test> SIZE=10 BODY=8BITMIME", "<a@b.test>", "SIZE=10 BODY=8BITMIME"),
        ("<>", "<>", ""),
        ('<"x y>"@b.test> RET=HDRS', '<"x y>"@b.test>', "RET=HDRS"),
        ("a@b.test NOTIFY=NEVER", "a@b.test", "NOTIFY=NEVER"),
    ],
)
def test_split_path(arg: str, path: str, rest: str) -> None:
    assert split_path(arg) == (path, rest)


def test_unterminated_path_is_a_syntax_error() -> None:
    with pytest.raises(ParamError) as err:
        split_path("<a@b.test")
    assert err.value.reply.code == 501


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("<dr.house@hopital.test>", "dr.house@hopital.test"),
        ("<@relay.one,@relay.two:dr@x.test>", "dr@x.test"),
        ('<"quoted local"@x.test>', '"quoted local"@x.test'),
        ("<a@[192.0.2.1]>", "a@[192.0.2.1]"),
        ("bare@x.test", "bare@x.test"),
    ],
)
def test_mailbox_accepted(path: str, expected: str) -> None:
    assert parse_mailbox(path, smtputf8=False, null_ok=False, bad=R.BAD_RECIPIENT_SYNTAX) == expected


@pytest.mark.parametrize("path", ["<a@@b.test>", "<a b@c.test>", "<@>", "<x@-bad.test>", "<a.@b.test>", "<a@b..test>"])
def test_mailbox_refused_501_513(path: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_mailbox(path, smtputf8=False, null_ok=False, bad=R.BAD_RECIPIENT_SYNTAX)
    assert str(err.value.reply).startswith("501 5.1.3 ")


def test_null_path_only_where_allowed() -> None:
    assert parse_mailbox("<>", smtputf8=False, null_ok=True, bad=R.BAD_SENDER_SYNTAX) == ""
    with pytest.raises(ParamError):
        parse_mailbox("<>", smtputf8=False, null_ok=False, bad=R.BAD_RECIPIENT_SYNTAX)


def test_non_ascii_needs_smtputf8() -> None:
    with pytest.raises(ParamError) as err:
        parse_mailbox("<médecin@hôpital.test>", smtputf8=False, null_ok=False, bad=R.BAD_RECIPIENT_SYNTAX)
    assert err.value.reply.enhanced == "5.6.7"
    assert parse_mailbox("<médecin@hôpital.test>", smtputf8=True, null_ok=False, bad=R.BAD_RECIPIENT_SYNTAX)


# --- parameters ---------------------------------------------------------------------------------------------------


def test_mail_parameters() -> None:
    p = parse_mail_params("size=1000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2Bx AUTH=<>", size_limit=5000)
    assert p == MailParams(size=1000, body_8bit=True, smtputf8=True, ret="HDRS", envid="QQ+x")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("SIZE=6000", "552 5.3.4"),
        ("SIZE=big", "555 5.5.4"),
        ("BODY=BINARYMIME", "555 5.5.4"),
        ("SMTPUTF8=yes", "555 5.5.4"),
        ("RET=ALL", "555 5.5.4"),
        ("ENVID=" + "a" * 101, "555 5.5.4"),
        ("ENVID=bad=xtext", "555 5.5.4"),
        ("SIZE=1 SIZE=2", "555 5.5.4"),
        ("XYZZY", "555 5.5.4"),
        ("=1", "555 5.5.4"),
    ],
)
def test_mail_parameter_refusals(text: str, code: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_mail_params(text, size_limit=5000)
    assert str(err.value.reply).startswith(code)


def test_rcpt_parameters() -> None:
    p = parse_rcpt_params("NOTIFY=success,Delay ORCPT=rfc822;Dr+2BHouse@x.test")
    assert p == RcptParams(frozenset({"SUCCESS", "DELAY"}), "rfc822;Dr+House@x.test")
    assert p.notify_text == "SUCCESS,DELAY" and p.wants("SUCCESS") and not p.wants("FAILURE")
    assert RcptParams().wants("FAILURE") and not RcptParams().wants("SUCCESS") and not RcptParams().wants("DELAY")
    assert parse_rcpt_params("NOTIFY=NEVER").wants("FAILURE") is False


@pytest.mark.parametrize(
    "text", ["NOTIFY=NEVER,SUCCESS", "NOTIFY=", "NOTIFY=SOMETIMES", "ORCPT=x", "ORCPT=;a", "FOO=1"]
)
def test_rcpt_parameter_refusals(text: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_rcpt_params(text)
    assert err.value.reply.code == 555


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",))))
def test_xtext_round_trips(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii() and "=" not in encoded and " " not in encoded
    assert xtext_decode(encoded) == text


_ARG = st.text(alphabet=st.sampled_from(list('<>@.:,; =+"\\abcXYZ019-éSIZEBODYRETNOTIFYORCPT\t')), max_size=60)


@given(_ARG)
def test_parsers_raise_only_param_errors(arg: str) -> None:
    """The invariant of every parser here: a value, or ParamError carrying a 5xx reply; never anything else."""
    for parse in (
        lambda: parse_mail_params(arg, size_limit=100),
        lambda: parse_rcpt_params(arg),
        lambda: parse_mailbox(split_path(arg)[0], smtputf8=True, null_ok=True, bad=R.BAD_SENDER_SYNTAX),
    ):
        try:
            parse()
        except ParamError as exc:
            assert 500 <= exc.reply.code < 600


# --- header work --------------------------------------------------------------------------------------------------

RAW = b"From: a@b.test\r\nSubject: one\r\n two\r\nReceived: x\r\nreceived: y\r\n\r\nbody\r\nSubject: not a header\r\n"


def test_fields_and_counts() -> None:
    assert [f.name for f in M.fields(RAW)] == ["from", "subject", "received", "received"]
    assert M.values(RAW, "Subject") == ["one two"] and M.count(RAW, "received") == 2


def test_missing_ids_are_added_at_the_end_of_the_header_only_when_missing() -> None:
    out = M.add_missing_ids(RAW, hostname="mx.test", now=NOW)
    head, body = M.split(out)
    assert body == b"\r\nbody\r\nSubject: not a header\r\n"
    assert head.startswith(M.split(RAW)[0]) and b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n" in head
    assert M.values(out, "message-id")[0].endswith("@mx.test>")
    assert M.add_missing_ids(out, hostname="mx.test", now=NOW) == out
    assert M.add_missing_ids(b"Subject: x\r\n", hostname="h", now=NOW).endswith(b"\r\n\r\n")


def test_remove_keeps_everything_else_byte_for_byte() -> None:
    assert M.remove(RAW, lambda f: f.name == "received") == (
        b"From: a@b.test\r\nSubject: one\r\n two\r\n\r\nbody\r\nSubject: not a header\r\n"
    )


def test_received_is_folded_ascii() -> None:
    field = M.received(
        helo="client (with) odd\\chars", peer_ip="127.0.0.1", by="mx.test", protocol="ESMTPSA",
        queue_id="q" * 32, recipient="p@x.test", tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384, 256 bits",
        when=NOW,
    )  # fmt: skip
    lines = field.decode("ascii").split("\r\n")
    assert lines[0].startswith("Received: from clientwithoddchars ([127.0.0.1])")
    assert all(len(line) <= 78 for line in lines) and lines[-1] == ""
    assert field.endswith(b"; Mon, 23 Nov 2026 10:00:00 +0000\r\n")


# --- DSN ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ret", "expected"), [("FULL", "message/rfc822"), ("HDRS", "text/rfc822-headers")])
def test_dsn_is_a_parseable_multipart_report(ret: str, expected: str) -> None:
    original = b"From: a@b.test\r\nMessage-ID: <m1@b.test>\r\nSubject: hi\r\n\r\nbody\r\n"
    raw = dsn.build(
        reporting_mta="mx.a.test",
        sender="MAILER-DAEMON@mx.a.test",
        to="a@b.test",
        original=original,
        recipients=[
            dsn.RecipientStatus("c@d.test", dsn.Action.FAILED, "5.1.1", "550 5.1.1 no such\r\n user", "mx.d.test",
                                "rfc822;C@d.test", NOW),
            dsn.RecipientStatus("e@d.test", dsn.Action.FAILED, "5.2.1", None),
        ],
        arrival=NOW,
        now=NOW,
        envid="E1",
        ret=ret,
    )  # fmt: skip
    assert b"\n" not in raw.replace(b"\r\n", b"")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report" and msg["In-Reply-To"] == "<m1@b.test>"
    text, status, returned = msg.iter_parts()
    assert "no such user" in text.get_content() and "Votre message" in text.get_content()
    blocks = [dict(b) for b in status.get_payload()]
    assert blocks[0] == {"Reporting-MTA": "dns; mx.a.test", "Original-Envelope-Id": "E1",
                         "Arrival-Date": "Mon, 23 Nov 2026 10:00:00 +0000"}  # fmt: skip
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user" and blocks[2]["Status"] == "5.2.1"
    assert returned.get_content_type() == expected


def test_success_dsn_returns_headers_only_by_default() -> None:
    raw = dsn.build(
        reporting_mta="m", sender="MAILER-DAEMON@m", to="a@b.test", original=b"Subject: s\r\n\r\nsecret body\r\n",
        recipients=[dsn.RecipientStatus("c@d.test", dsn.Action.DELIVERED, "2.0.0")], arrival=NOW, now=NOW,
    )  # fmt: skip
    assert b"secret body" not in raw and b"text/rfc822-headers" in raw


# --- replies ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("500 Error: bad syntax", "500 5.5.2 bad syntax"),
        ("502 5.5.1 Too many unrecognized commands, goodbye.", "502 5.5.1 Too many unrecognized commands, goodbye."),
        ("354 End data", "354 End data"),
        ("334 ", "334 "),
        ("421 4.7.0 QUIT sent too many times", "421 4.7.0 QUIT sent too many times"),
        ("538 Encryption required", "538 5.7.11 Encryption required"),
    ],
)
def test_enhanced_codes_are_added_where_missing(line: str, expected: str) -> None:
    assert R.with_enhanced_code(line) == expected


# --- DKIM keys on disk --------------------------------------------------------------------------------------------


def test_dkim_key_files(tmp_path: Path) -> None:
    assert dkimlib.load_current(tmp_path, "x.test") is None
    pair = dkimlib.generate_key()
    path = dkimlib.write_key(tmp_path, "X.test", "s1", pair.private_pem)
    assert path.stat().st_mode & 0o777 == 0o600
    assert dkimlib.load_current(tmp_path, "x.test") == ("s1", pair.private_pem)
    with pytest.raises(dkimlib.DkimError):
        dkimlib.write_key(tmp_path, "x.test", "s1", pair.private_pem)
    with pytest.raises(dkimlib.DkimError):
        dkimlib.check_selector("../etc")
    assert dkimlib.record_for(pair.private_pem) == pair.record
    assert all(len(c) <= 255 for c in dkimlib.txt_chunks(pair.record))


def test_dkim_sign_needs_a_from_header() -> None:
    pair = dkimlib.generate_key()
    with pytest.raises(dkimlib.DkimError):
        dkimlib.sign(b"Subject: x\r\n\r\nbody\r\n", domain="x.test", selector="s", private_pem=pair.private_pem)
