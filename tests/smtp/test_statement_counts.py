"""How many SQL statements one RCPT TO (and an MX's MAIL FROM) costs, on SQLite and PostgreSQL (issue 10 point 4,
"a lean hot path").

Each figure is an upper bound: a RCPT that costs more fails the test, so a change that adds round trips to
the aiosqlite thread (or to PostgreSQL) on the hot path is seen. Statements are counted at the driver
(``before_cursor_execute`` on the server's engine), the read transaction's own ``BEGIN`` left out, and so
is what runs in the background whatever the clients do: the queue worker's looks at its queue, and on PostgreSQL
the audit sealer chaining what earlier commits staged.

- A local recipient is one statement: its domain, its account and what the account holds (the quota's
  usage, for a full mailbox's ``552``) read together (``AccountRepository.local``).
- Another domain's address is two: ours or not, then its operator with the directory's published mailbox
  (``TrustRepository.remote``).
- A patient sender's conversation grant is one more, in the same read transaction.
- An operator's MAIL FROM on the MX is three, in one read transaction: its operator (with the directory's
  word on the sender), the DNs it lists, whether the sender's domain is ours.

Every reply is asserted too: the policy decides exactly as before, whatever the statements.
"""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.harness.statements import Counter, background_sealer, listening
from tests.smtp.conftest import OTHER, OTHER_DN, PATIENT, PRO, PRO2
from tests.smtp.harness import ServerThread, mx, submission

#: (sender, recipient) -> (expected reply code, statements it may cost); before issue 10 point 4: 3, 3, 2, 3, 2, 3
CASES = {
    "a local professional": (PRO, PRO2, 250, 1),
    "a local patient": (PRO, PATIENT, 250, 1),
    "no such local account": (PRO, f"nobody.here@{support.PRO_DOMAIN}", 550, 1),
    "another operator's professional": (PRO, f"dr.someone@{OTHER}", 250, 2),
    "outside the trust space": (PRO, "someone@gmail.com", 550, 2),
    "a patient to a professional, no grant": (PATIENT, PRO, 550, 2),
}
#: statements of the background, not of the RCPT
_BACKGROUND = ("FROM outbound_queue",)


@pytest.fixture
def counter(site: ServerThread) -> Iterator[Counter]:
    with listening(site.ctx.db.engine, skip=(*_BACKGROUND, *background_sealer(site.ctx.db))) as c:
        yield c


def test_statements_per_rcpt_stay_within_their_bounds(
    site: ServerThread, pki: support.TestPKI, counter: Counter
) -> None:
    sessions: dict[str, smtplib.SMTP] = {}
    counts: dict[str, list[str]] = {}
    try:
        for name, (sender, rcpt, code, _) in CASES.items():
            s = sessions.get(sender)
            if s is None:
                s = sessions[sender] = submission(site, pki, sender)
            s.rset()
            assert s.mail(sender)[0] == 250
            with counter.counting() as seen:
                got, text = s.rcpt(rcpt)
            assert got == code, (name, got, text)
            counts[name] = seen
    finally:
        for s in sessions.values():
            with contextlib.suppress(smtplib.SMTPException, OSError):
                s.quit()
    figures = {name: len(seen) for name, seen in counts.items()}
    print("statements per RCPT:", figures)  # noqa: T201 - pytest -s
    over = {name: (n, CASES[name][3], counts[name]) for name, n in figures.items() if n > CASES[name][3]}
    assert not over, over


#: statements of an operator's MAIL FROM on the MX, and of its RCPT to our professional (before: 5, 3)
MX_MAIL, MX_RCPT = 3, 1


def test_statements_of_an_operators_mail_from_and_rcpt_on_the_mx(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]], counter: Counter
) -> None:
    s = mx(site, pki, client_certs[OTHER_DN])
    try:
        with counter.counting() as mail:
            assert s.mail(f"dr.someone@{OTHER}")[0] == 250
        with counter.counting() as rcpt:
            assert s.rcpt(PRO2)[0] == 250
        assert s.rcpt(f"dr.elsewhere@{OTHER}")[0] == 550  # an MX relays nothing, resolved or not
    finally:
        s.quit()
    print("statements of MAIL FROM and RCPT on the MX:", len(mail), len(rcpt))  # noqa: T201 - pytest -s
    assert len(mail) <= MX_MAIL and len(rcpt) <= MX_RCPT, (mail, rcpt)
