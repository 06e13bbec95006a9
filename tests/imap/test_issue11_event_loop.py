"""Issue 11: a SEARCH BODY or a large FETCH does not stall the other sessions of the process.

Taking bodies apart, matching them and rendering body sections run in a worker thread. Shown by events,
not by timings: the body work of one session is held (the first message it takes apart waits until the
test says so), and another session's NOOP must be answered while it is held. Were that work on the event
loop, the loop itself would be held and the NOOP answered only after the SEARCH or FETCH. Real sockets and
TLS with imaplib, on both databases.
"""

from __future__ import annotations

import imaplib
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.message.parsed import ParsedMessage
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, crlf, imaps, message

MESSAGES = 300
HOLD = 20.0  # seconds the held work waits at most for the test's NOOP (a failing run, not a timing)


def _fill(srv: ServerThread, user: Account) -> None:
    async def go(ctx: Context) -> None:
        async with ctx.uow() as uow:
            account = await uow.accounts.get(user.id)
            assert account is not None
            for n in range(MESSAGES):
                body = "the needle is here" if n == MESSAGES - 1 else f"haystack number {n} " * 40
                raw = crlf(message("lab@example.org", user.address, f"report {n}", body=body))
                await deliver(uow, ctx.keyring, raw, [account])
            await uow.commit()

    srv.call(go)


class Held:
    """The first call of a patched ``ParsedMessage`` method sets ``entered`` and waits for ``release``
    (``released_in_time`` says whether it came before ``HOLD``); the others go through."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.released_in_time: bool | None = None


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    h = Held()

    def hold(name: str) -> None:
        original: Callable[..., Any] = getattr(ParsedMessage, name)

        def holding(self: ParsedMessage, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - any method
            if not h.entered.is_set():
                h.entered.set()
                h.released_in_time = h.release.wait(HOLD)
            return original(self, *args, **kwargs)

        monkeypatch.setattr(ParsedMessage, name, holding)

    hold("search_texts")
    hold("section")
    yield h
    h.release.set()


def _noop_answered_while_held(
    srv: ServerThread,
    user: Account,
    tls: ssl.SSLContext,
    held: Held,
    heavy: Callable[[imaplib.IMAP4_SSL], tuple[str, Any]],
) -> tuple[str, Any]:
    """Run ``heavy`` in one session and, while its body work is held, a NOOP in another; the order the two
    were answered in and ``heavy``'s answer."""
    a, b = imaps(srv, tls, user), imaps(srv, tls, user)
    order: list[str] = []
    try:
        a.select("INBOX", readonly=True)
        b.select("INBOX", readonly=True)
        with ThreadPoolExecutor(1) as pool:

            def run() -> tuple[str, Any]:
                answer = heavy(a)
                order.append("heavy")
                return answer

            future = pool.submit(run)
            assert held.entered.wait(60), "the body work never started"
            assert b.noop()[0] == "OK"
            order.append("noop")
            held.release.set()
            answer = future.result(60)
    finally:
        a.logout()
        b.logout()
    assert order == ["noop", "heavy"]
    assert held.released_in_time, "the NOOP was answered only after the held body work gave up waiting"
    return answer


def test_a_search_body_does_not_hold_other_sessions(
    srv: ServerThread, user: Account, tls_client: ssl.SSLContext, held: Held
) -> None:
    _fill(srv, user)
    typ, data = _noop_answered_while_held(srv, user, tls_client, held, lambda m: m.search(None, "BODY", "needle"))
    assert typ == "OK"
    assert data == [str(MESSAGES).encode()]


def test_a_large_fetch_does_not_hold_other_sessions(
    srv: ServerThread, user: Account, tls_client: ssl.SSLContext, held: Held
) -> None:
    _fill(srv, user)
    typ, data = _noop_answered_while_held(srv, user, tls_client, held, lambda m: m.fetch("1:*", "(BODY.PEEK[TEXT])"))
    assert typ == "OK"
    assert sum(1 for d in data if isinstance(d, tuple)) == MESSAGES
