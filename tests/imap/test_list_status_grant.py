"""LIST-STATUS through an app grant (issue 12 point 7 with RFC 5819): only the granted folders, with their STATUS.

A grant limited to ``Documents`` must not learn, through ``LIST ... RETURN (STATUS ...)``, what
INBOX holds, nor that other folders exist; its STATUS lines are those of its folders only.
"""

from __future__ import annotations

import pytest

from tests import support
from tests.auth.creds_harness import admin, creds_server, imaps, patient, secret_of
from tests.harness.messages import message
from tests.harness.server import ServerThread
from tests.imap.conftest import raw_command

srv = creds_server(security={"patient_second_factor": True})


@pytest.fixture(autouse=True)
def _clean_throttle(srv: ServerThread) -> None:
    srv.reset_throttle()


def test_list_status_through_a_grant_shows_only_its_folders(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    assert p.ins is not None
    srv.deliver(p, message("dr@hopital.test", p.address, "CR", "compte rendu"), mailbox="Documents/Resultats")
    srv.deliver(p, message("dr@hopital.test", p.address, "secret", "inbox"))
    password = secret_of(admin(srv, "app", "grant", p.ins, "--app", "Mon Suivi", "--folders", "Documents"))
    m = imaps(srv, pki, p.address, password)
    lines = raw_command(m, 'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))')
    assert lines[-1].endswith(b"OK LIST completed"), lines
    names = [x.rsplit(b' "/" ', 1)[1] for x in lines if x.startswith(b"* LIST ")]
    statuses = [x for x in lines if x.startswith(b"* STATUS ")]
    assert names and all(n.strip(b'"').startswith(b"Documents") for n in names), names
    assert all(s.split(b" ")[2].strip(b'"').startswith(b"Documents") for s in statuses), statuses
    assert b'* STATUS "Documents/Resultats" (MESSAGES 1 UNSEEN 1)' in statuses
    assert not [x for x in lines if b"INBOX" in x]
    m.logout()
