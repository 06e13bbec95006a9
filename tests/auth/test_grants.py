"""Delegated access for labelled apps (issue 12, point 7): ``masante-admin app grant`` and what IMAP lets it do."""

from __future__ import annotations

import imaplib

import pytest

from mailserver.store.models import Account
from tests import support
from tests.auth.creds_harness import admin, creds_server, imaps, login_refused, patient, secret_of, smtp_refused, tagged
from tests.harness.messages import crlf, message
from tests.harness.server import ServerThread

srv = creds_server(security={"patient_second_factor": True})
APP = "Mon Suivi"


@pytest.fixture(autouse=True)
def _clean_throttle(srv: ServerThread) -> None:
    srv.reset_throttle()


def grant(srv: ServerThread, p: Account, *extra: str, folders: str = "Documents") -> str:
    assert p.ins is not None
    return secret_of(admin(srv, "app", "grant", p.ins, "--app", APP, "--folders", folders, *extra))


def listed(m: imaplib.IMAP4) -> list[str]:
    typ, data = m.list('""', "*")
    assert typ == "OK"
    return [line.decode().rsplit(' "/" ', 1)[1].strip('"') for line in data if isinstance(line, bytes)]


def test_a_read_only_grant_sees_only_its_folders_and_changes_nothing(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    uid = srv.deliver(p, message("dr@hopital.test", p.address, "CR", "compte rendu"), mailbox="Documents/Resultats")
    srv.deliver(p, message("dr@hopital.test", p.address, "secret", "inbox"))
    password = grant(srv, p, "--read-only", "--expires", "90d")
    m = imaps(srv, pki, p.address, password)

    names = listed(m)
    assert names and all(n == "Documents" or n.startswith("Documents/") for n in names), names
    assert "Documents/Resultats" in names
    assert b"OK" in tagged(m, 'LSUB "" "*"')
    assert b"NO [NOPERM]" in tagged(m, "SELECT INBOX")
    assert b"NO [NOPERM]" in tagged(m, "STATUS INBOX (MESSAGES)")
    assert b"NO [NOPERM]" in tagged(m, "EXAMINE Agenda")
    assert b"NO [NOPERM]" in tagged(m, "SELECT Nonexistent")  # the same answer whether it exists or not
    assert b"OK" in tagged(m, "STATUS Documents/Resultats (MESSAGES)")

    assert m.select("Documents/Resultats")[0] == "OK"
    typ, data = m.uid("FETCH", str(uid), "(BODY[])")
    assert typ == "OK" and b"compte rendu" in data[0][1]
    typ, data = m.uid("FETCH", str(uid), "(FLAGS)")
    assert b"\\Seen" not in data[0]  # reading through a read-only grant marks nothing
    assert b"NO [NOPERM]" in tagged(m, f"UID STORE {uid} +FLAGS (\\Deleted)")
    assert b"NO [NOPERM]" in tagged(m, f"UID COPY {uid} Documents/Autres")
    assert b"NO [NOPERM]" in tagged(m, f"UID MOVE {uid} INBOX")
    assert b"NO [NOPERM]" in tagged(m, "CREATE Documents/Mine")
    assert b"NO [NOPERM]" in tagged(m, "DELETE Documents/Autres")
    assert b"NO [NOPERM]" in tagged(m, "RENAME Documents/Autres Documents/Other")
    raw = crlf(message(p.address, p.address, "note", "by the app"))
    for target in ("Documents/Autres", "INBOX"):
        typ, data = m.append(target, None, None, raw)
        assert typ == "NO" and data[0].startswith(b"[NOPERM]"), (target, data)
    m.logout()

    # every access through the grant is audited with the app's name
    actor = f"{p.address} via app {APP}"
    assert any(e.actor == actor for e in srv.audit("imap.select"))
    assert any(e.actor == actor for e in srv.audit("vault.read"))  # a read in Documents/ is a vault read
    assert any(f"via app {APP}" in (e.detail or "") for e in srv.audit("login") if e.actor == p.address)


def test_a_grant_opens_imap_only_and_not_the_second_factor(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    password = grant(srv, p)
    imaps(srv, pki, p.address, password).logout()  # a grant is its own factor: no one-time code
    assert smtp_refused(srv, pki, p.address, password) == 535


def test_revoke_stops_new_logins_and_open_sessions_at_their_next_command(
    srv: ServerThread, pki: support.TestPKI
) -> None:
    p = patient(srv)
    assert p.ins is not None
    password = grant(srv, p)
    m = imaps(srv, pki, p.address, password)
    assert m.select("Documents")[0] == "OK"
    r = admin(srv, "app", "revoke", p.ins, "--app", APP, process=True)
    assert r.returncode == 0, r.stderr
    with pytest.raises(imaplib.IMAP4.abort, match="revoked"):
        m.noop()
    m.shutdown()
    assert "AUTHENTICATIONFAILED" in login_refused(srv, pki, p.address, password)
    out = admin(srv, "app", "list", p.ins).stdout
    assert "revoked" in next(x for x in out.splitlines() if APP in x)


def test_a_grant_expires_on_the_clock_and_app_list_shows_last_use(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    assert p.ins is not None
    password = grant(srv, p, "--expires", "1d", folders="Documents,Agenda")
    m = imaps(srv, pki, p.address, password)
    assert set(listed(m)) >= {"Documents", "Agenda"} and "INBOX" not in listed(m)
    out = admin(srv, "app", "list", p.ins).stdout
    line = next(x for x in out.splitlines() if APP in x)
    assert "Documents,Agenda" in line and "read-only" in line and "active" in line
    srv.advance(2 * 86400)  # past the day (the grant was made on the system clock, a little after the server's start)
    with pytest.raises(imaplib.IMAP4.abort, match="expired"):
        m.noop()
    m.shutdown()
    assert "AUTHENTICATIONFAILED" in login_refused(srv, pki, p.address, password)
    fails = [e for e in srv.audit("login") if e.actor == p.address and e.outcome == "fail"]
    assert any("app-password-expired" in (e.detail or "") for e in fails)


def test_a_read_write_grant_writes_inside_its_folders_only(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    password = grant(srv, p, "--read-write", folders="Agenda")
    m = imaps(srv, pki, p.address, password)
    raw = crlf(message(p.address, p.address, "rdv", "mardi"))
    assert m.append("Agenda", None, None, raw)[0] == "OK"
    assert m.select("Agenda")[0] == "OK"
    assert b"OK" in tagged(m, "STORE 1 +FLAGS (\\Flagged)")
    assert b"NO [NOPERM]" in tagged(m, "COPY 1 INBOX")
    m.logout()


def test_grant_refuses_what_cannot_be_granted(srv: ServerThread) -> None:
    p = patient(srv)
    assert p.ins is not None
    missing = admin(srv, "app", "grant", p.ins, "--app", APP, "--folders", "Dossiers")
    assert missing.returncode != 0 and "no folder Dossiers" in missing.stderr
    bad = admin(srv, "app", "grant", p.ins, "--app", APP, "--folders", "Documents", "--expires", "soon")
    assert bad.returncode != 0 and "--expires" in bad.stderr
    pro = admin(srv, "app", "grant", "279035121518989", "--app", APP, "--folders", "Documents")
    assert pro.returncode != 0 and "no patient mailbox" in pro.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + pro.stderr


def test_a_folder_covers_its_children_not_its_namesakes() -> None:
    from directory.app_passwords import KIND_GRANT, Scope

    scope = Scope(1, KIND_GRANT, APP, frozenset({"imap"}), ("Documents", "inbox/Lab"), True, APP)
    assert scope.covers("Documents") and scope.covers("Documents/Resultats/2026")
    assert not scope.covers("Documents2") and not scope.covers("Document") and not scope.covers("INBOX")
    assert scope.covers("INBOX/Lab") and scope.covers("Inbox/Lab/x")  # INBOX is case-insensitive, the rest is not
    assert not scope.covers("documents")
