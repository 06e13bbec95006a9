"""The sans-IO DATA reader: transcripts, then every split of grammar-biased input (h11's fuzzing invariant).

The oracle is a second, deliberately naive reading of the same rules (RFC 5321
§4.1.1.4 terminator, §4.5.2 unstuffing, §2.3.8 CRLF only), computed on the whole
input at once; the reader must agree with it whatever the chunking, and raise
nothing but ``DataError``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailserver.smtp import replies as R
from mailserver.smtp.data import DataError, DataReader, DataResult
from policies.reply import Reply
from tests.fuzzing import examples

LIMIT = 1100
LINE = 1000


def read(data: bytes, *, size_limit: int = LIMIT, max_line_length: int = LINE) -> tuple[DataResult, bytes]:
    r = DataReader(size_limit=size_limit, max_line_length=max_line_length)
    rest = r.feed(data)
    return r.result(), rest


# --- transcripts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content", "rest"),
    [
        (b".\r\n", b"", b""),
        (b"\r\n.\r\n", b"\r\n", b""),
        (b"Subject: x\r\n\r\nhi\r\n.\r\n", b"Subject: x\r\n\r\nhi\r\n", b""),
        (b"..dot\r\n.\r\n", b".dot\r\n", b""),
        (b"a\r\n..\r\n...\r\n.\r\n", b"a\r\n.\r\n..\r\n", b""),
        (b"a\r\n.\r\nQUIT\r\n", b"a\r\n", b"QUIT\r\n"),
        (b".x\r\n.\r\n", b"x\r\n", b""),  # a lone leading dot before text is a transparency dot too
    ],
)
def test_terminator_and_unstuffing(data: bytes, content: bytes, rest: bytes) -> None:
    result, left = read(data)
    assert (result.content, result.problem, left) == (content, None, rest)
    assert result.size == len(data) - 3 - len(rest)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"one\ntwo\r\n.\r\n", R.BARE_LINEFEED),
        (b"one\rtwo\r\n.\r\n", R.BARE_LINEFEED),
        (b"hello\n.\nMAIL FROM:<x@gmail.com>\nDATA\nevil\n.\r\n.\r\n", R.BARE_LINEFEED),  # smuggling
        (b"nul\0here\r\n.\r\n", R.NUL_IN_DATA),
        (b"y" * 1000 + b"\r\n.\r\n", R.LINE_TOO_LONG),
        (b"." + b"y" * 998 + b"\r\n.\r\n", None),  # 998 octets of text, a transparency dot, CRLF
        (b"x\r\n" * 400 + b".\r\n", R.message_too_big(LIMIT)),
        (b"\0\n" + b"y" * 1200 + b"\r\n.\r\n", R.message_too_big(LIMIT)),  # too big wins over the rest
        (b"\0\n\r\n.\r\n", R.BARE_LINEFEED),
        (b"\0" + b"y" * 1200 + b"\r\n.\r\n", R.message_too_big(LIMIT)),
    ],
)
def test_refusals_wait_for_the_terminator(data: bytes, problem: Reply | None) -> None:
    result, left = read(data)
    assert (result.problem, left) == (problem, b"")
    if problem is not None:
        assert result.content == b""


@pytest.mark.parametrize("end", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"])
def test_only_crlf_dot_crlf_ends_the_data(end: bytes) -> None:
    r = DataReader(size_limit=LIMIT, max_line_length=LINE)
    assert r.feed(b"text" + end) == b""
    assert not r.done
    with pytest.raises(DataError):
        r.result()
    with pytest.raises(DataError):
        r.feed(b"")  # the end of the stream before the terminator


def test_past_the_limit_nothing_more_is_stored() -> None:
    r = DataReader(size_limit=100, max_line_length=LINE)
    for _ in range(50):
        r.feed(b"0123456789" * 3 + b"\r\n")
    assert r.kept == 0 and r.size == 50 * 32  # counted, not kept
    r.feed(b".\r\n")
    assert r.result().problem == R.message_too_big(100) and r.result().size == 50 * 32


def test_nothing_is_taken_after_the_end() -> None:
    r = DataReader(size_limit=LIMIT, max_line_length=LINE)
    r.feed(b".\r\n")
    with pytest.raises(DataError):
        r.feed(b"more")


# --- every split ----------------------------------------------------------------------------------------------


def oracle(data: bytes, size_limit: int, max_line_length: int) -> tuple[DataResult, bytes] | None:
    """The same rules read naively on the whole input: None when no terminator."""
    s = b"\r\n" + data
    i = s.find(b"\r\n.\r\n")
    if i < 0:
        return None
    raw, rest = s[2 : i + 2], s[i + 5 :]
    lines = raw.split(b"\r\n")
    crlf = len(lines) - 1
    problem: Reply | None = None
    if size_limit and len(raw) > size_limit:
        problem = R.message_too_big(size_limit)
    elif raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
        problem = R.BARE_LINEFEED
    elif b"\0" in raw:
        problem = R.NUL_IN_DATA
    elif any(len(line) > max_line_length - 1 for line in lines):
        problem = R.LINE_TOO_LONG
    content = b"" if problem else b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    return DataResult(content, len(raw), problem), rest


#: the grammar's pieces: line ends right and wrong, dots at line starts, the terminator, NUL, text, a long run
PIECES = [b"\r\n", b"\r", b"\n", b".", b"..", b".\r\n", b"\r\n.\r\n", b"\r\n.", b".\r", b"\0", b"a", b"Subject: x"]
PIECES += [b" ", b"y" * 12, b"\xc3\xa9", b"\xff"]
#: random octets mapped onto the pieces (smtp-proto's fuzz target maps onto an alphabet the same way): one draw
GRAMMAR = st.binary(max_size=24).map(lambda octets: b"".join(PIECES[o % len(PIECES)] for o in octets))


def feed_chunks(chunks: list[bytes], size_limit: int, max_line_length: int) -> tuple[DataResult, bytes] | None:
    r = DataReader(size_limit=size_limit, max_line_length=max_line_length)
    for n, chunk in enumerate(chunks):
        if not chunk:
            continue
        rest = r.feed(chunk)
        if r.done:
            return r.result(), rest + b"".join(chunks[n + 1 :])
        assert rest == b""
    try:  # the end of the stream before the terminator: the reader's own error, and only that
        r.feed(b"")
    except DataError:
        return None
    raise AssertionError("an incomplete DATA was not refused")


@settings(max_examples=examples(10_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=GRAMMAR,
    cuts=st.binary(max_size=8),
    size_limit=st.sampled_from([0, 12, 40, LIMIT]),
    max_line_length=st.sampled_from([6, 30, LINE]),
)
def test_every_split_gives_the_whole_input_result(
    data: bytes, cuts: bytes, size_limit: int, max_line_length: int
) -> None:
    expected = oracle(data, size_limit, max_line_length)
    whole = feed_chunks([data], size_limit, max_line_length)
    assert whole == expected
    byte_by_byte = feed_chunks([data[i : i + 1] for i in range(len(data))], size_limit, max_line_length)
    assert byte_by_byte == expected
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert feed_chunks(chunks, size_limit, max_line_length) == expected


@settings(max_examples=examples(2_000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=34), min_size=1, max_size=80),
    cuts=st.binary(max_size=8),
    max_line_length=st.sampled_from([6, 7, 30]),
)
def test_many_lines_near_the_limit_are_measured_exactly(lengths: list[int], cuts: bytes, max_line_length: int) -> None:
    """Long bodies of lines around the line limit (the reader measures them by blocks, without splitting):
    one line past it, wherever it falls and however the stream is cut, refuses the message; none, and it is
    kept whole."""
    data = b"".join(b"b" * n + b"\r\n" for n in lengths) + b".\r\n"
    expected = oracle(data, 0, max_line_length)
    assert feed_chunks([data], 0, max_line_length) == expected
    bounds = [0, *sorted(c * 7 % (len(data) + 1) for c in cuts), len(data)]
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert feed_chunks(chunks, 0, max_line_length) == expected


def test_a_long_line_deep_in_a_large_attachment_is_found() -> None:
    """A 2 MB base64 body with one line of 1,000 octets among its 27,000: refused; at 999 (the limit with its
    CRLF), kept."""
    body = (b"QUJD" * 19 + b"\r\n") * 13_500
    for n, problem in ((LINE, R.LINE_TOO_LONG), (LINE - 1, None)):
        data = body + b"y" * n + b"\r\n" + body + b".\r\n"
        result = feed_chunks([data[i : i + 16_384] for i in range(0, len(data), 16_384)], 0, LINE)
        assert result is not None and result[0].problem == problem


def test_refuse_keeps_nothing_reads_to_the_end_and_yields_to_the_data_problems() -> None:
    """``refuse`` (the large-message gate had no slot in time): the rest is read, nothing kept, its reply after
    the dot; the data's own problems (too big) come first; a refusal after the end replaces the content."""
    from mailserver.smtp.data import DataReader
    from mailserver.smtp.gate import BUSY

    r = DataReader(size_limit=0, max_line_length=1000)
    assert r.feed(b"Subject: x\r\n\r\nfirst") == b""
    r.refuse(BUSY)
    assert r.refused
    assert r.feed(b" line\r\n.\r\nQUIT\r\n") == b"QUIT\r\n"
    assert (r.result().content, r.result().problem, r.result().size) == (b"", BUSY, 26)

    big = DataReader(size_limit=10, max_line_length=1000)
    big.feed(b"0123456789abcdef\r\n")
    big.refuse(BUSY)
    big.feed(b".\r\n")
    assert big.result().problem is not None and big.result().problem.code == 552

    done = DataReader(size_limit=0, max_line_length=1000)
    done.feed(b"ok\r\n.\r\n")
    assert done.result().content == b"ok\r\n"
    done.refuse(BUSY)
    assert (done.result().content, done.result().problem) == (b"", BUSY)
