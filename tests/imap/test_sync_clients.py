"""Real clients nobody here wrote: Debian's offlineimap3 and fetchmail sync over ``localhost``, certificates verified.

offlineimap: a full sync (INBOX and a folder with a non-ASCII name, modified
UTF-7 on the wire) to a Maildir, then a change on the server (a new message, a
flag, an expunge) and one in the Maildir (a flag) travel across.
fetchmail: the INBOX over IMAPS to an MDA that writes each message to a file,
first with ``keep`` (each message arrives once, stays on the server), then
without (the server's INBOX ends empty).

Every client runs under a timeout (``CLIENT_TIMEOUT``); one that hangs is killed and its test fails.
"""

from __future__ import annotations

import imaplib
import os
import signal
import ssl
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path

import pytest

from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import ServerThread, crlf, imaps, message

#: seconds a client may run before it is killed and the test fails
CLIENT_TIMEOUT = 30
FOLDER = "Résultats"
FOLDER_WIRE = "R&AOk-sultats"  # FOLDER in modified UTF-7 (RFC 3501 section 5.1.3)
LOCAL_FOLDER = "Données"  # made in the Maildir, then on the server
LOCAL_FOLDER_WIRE = "Donn&AOk-es"


def _tool(command: str, package: str) -> str:
    return support.tool(command, package)


def run_client(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run a client with ``home`` as its HOME, in a process group of its own: one that hangs is killed with
    whatever it started (fetchmail's MDA), and the test fails."""
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    with subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{argv[0]} hung for {CLIENT_TIMEOUT} s and was killed:\n{out}{err}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def sync(argv: list[str], home: Path) -> None:
    proc = run_client(argv, home)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def lf(raw: bytes) -> bytes:
    """``raw`` with the local line ending a Maildir holds (offlineimap writes LF)."""
    return raw.replace(b"\r\n", b"\n")


def subject_of(raw: bytes) -> str:
    return str(message_from_bytes(raw)["Subject"])


# --- offlineimap -------------------------------------------------------------------------------------------


def offlineimap_config(tmp: Path, srv: ServerThread, user: Account, ca: Path) -> Path:
    cfg = tmp / "offlineimaprc"
    cfg.write_text(
        f"""[general]
accounts = masante
metadata = {tmp}/offlineimap-meta
ui = basic

[Account masante]
localrepository = local
remoterepository = remote
utf8foldernames = yes

[Repository local]
type = Maildir
localfolders = {tmp}/Mail

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {srv.port("imaps")}
ssl = yes
sslcacertfile = {ca}
remoteuser = {user.address}
remotepass = {support.PASSWORD}
maxconnections = 1
holdconnectionopen = no
timeout = {CLIENT_TIMEOUT // 2}
""",
        encoding="utf-8",
    )
    return cfg


def maildir(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Subject -> (Maildir flags, the file's bytes) of every message of a Maildir folder."""
    out: dict[str, tuple[str, bytes]] = {}
    for sub in ("cur", "new"):
        for f in (folder / sub).iterdir():
            raw = f.read_bytes()
            out[subject_of(raw)] = (f.name.split(":2,", 1)[1] if ":2," in f.name else "", raw)
    return out


def server_flags(c: imaplib.IMAP4_SSL, mailbox: str) -> dict[str, set[bytes]]:
    """Subject -> flags of every message of ``mailbox`` on the server (read-only)."""
    assert c.select(mailbox, readonly=True)[0] == "OK"
    typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    out: dict[str, set[bytes]] = {}
    for item in data:
        if isinstance(item, tuple):
            flags = item[0].split(b"FLAGS (", 1)[1].split(b")", 1)[0].split()
            out[subject_of(item[1])] = set(flags)
    return out


def mailboxes(c: imaplib.IMAP4_SSL) -> set[str]:
    typ, listed = c.list()
    assert typ == "OK"
    return {line.rsplit(b" ", 1)[1].strip(b'"').decode() for line in listed if isinstance(line, bytes)}


@pytest.mark.slow
def test_offlineimap_syncs_both_ways(
    imap_server: ServerThread, tls_client: ssl.SSLContext, pki: support.TestPKI, tmp_path: Path
) -> None:
    offlineimap = _tool("offlineimap", "offlineimap3")
    srv = imap_server
    user = srv.make_pro("offlineimap")
    sent = {f"resultat {i}": message("lab@lab.test", user.address, f"resultat {i}", f"valeur {i}\n") for i in range(3)}
    for raw in sent.values():
        srv.deliver(user, raw)
    c = imaps(srv, tls_client, user)
    assert c.create(FOLDER_WIRE)[0] == "OK"
    archived = {f"archive {i}": message("lab@lab.test", user.address, f"archive {i}", "é à ü\n") for i in range(2)}
    for raw in archived.values():
        assert c.append(FOLDER_WIRE, "(\\Seen)", None, crlf(raw))[0] == "OK"
    before = mailboxes(c)
    assert FOLDER_WIRE in before
    cfg = offlineimap_config(tmp_path, srv, user, pki.ca_file)
    argv = [offlineimap, "-c", str(cfg), "-o", "-u", "basic"]

    sync(argv, tmp_path)
    inbox, folder = tmp_path / "Mail" / "INBOX", tmp_path / "Mail" / FOLDER
    local = maildir(inbox)
    assert {s: (flags, lf(raw)) for s, (flags, raw) in local.items()} == {s: ("", lf(raw)) for s, raw in sent.items()}
    local = maildir(folder)
    assert {s: (flags, lf(raw)) for s, (flags, raw) in local.items()} == {
        s: ("S", lf(raw)) for s, raw in archived.items()
    }

    # on the server: a new message, a flag, an expunge
    new = message("lab@lab.test", user.address, "resultat 3", "valeur 3\n")
    srv.deliver(user, new)
    assert c.select("INBOX")[0] == "OK"
    assert c.store("1", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert c.store("2", "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert c.expunge()[0] == "OK"

    sync(argv, tmp_path)
    local = maildir(inbox)
    assert {s: flags for s, (flags, _) in local.items()} == {"resultat 0": "F", "resultat 2": "", "resultat 3": ""}
    assert lf(local["resultat 3"][1]) == lf(new)

    # in the Maildir: read one, file one in a new folder
    files = [*(inbox / "cur").iterdir(), *(inbox / "new").iterdir()]
    (f,) = (p for p in files if subject_of(p.read_bytes()) == "resultat 2")
    name, _, flags = f.name.partition(":2,")
    f.rename(inbox / "cur" / f"{name}:2,{''.join(sorted(set(flags) | {'S'}))}")
    filed = message(user.address, "lab@lab.test", "compte rendu", "rédigé\n")
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "Mail" / LOCAL_FOLDER / sub).mkdir(parents=True)
    (tmp_path / "Mail" / LOCAL_FOLDER / "cur" / "1700000000.1.local:2,S").write_bytes(lf(filed))

    sync(argv, tmp_path)
    view = server_flags(c, "INBOX")
    assert view.keys() == {"resultat 0", "resultat 2", "resultat 3"}
    assert b"\\Seen" in view["resultat 2"] and b"\\Seen" not in view["resultat 3"]
    assert b"\\Flagged" in view["resultat 0"]
    assert {s: b"\\Seen" in flags for s, flags in server_flags(c, FOLDER_WIRE).items()} == dict.fromkeys(archived, True)
    assert mailboxes(c) == before | {LOCAL_FOLDER_WIRE}  # and no other from a wrong reading of a local name
    assert server_flags(c, LOCAL_FOLDER_WIRE) == {"compte rendu": {b"\\Seen"}}
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and isinstance(data[0], tuple)
    assert data[0][1] == crlf(filed)  # as written, no X-OfflineIMAP header: the server's APPENDUID told its UID
    c.logout()


@pytest.mark.slow
def test_offlineimap_refuses_a_server_its_ca_did_not_sign(
    imap_server: ServerThread, pki: support.TestPKI, tmp_path: Path
) -> None:
    offlineimap = _tool("offlineimap", "offlineimap3")
    srv = imap_server
    user = srv.make_pro("offlineimap")
    srv.deliver(user, message("lab@lab.test", user.address, "resultat", "valeur\n"))
    (tmp_path / "other").mkdir()
    other = support.TestPKI.create(tmp_path / "other")
    cfg = offlineimap_config(tmp_path, srv, user, other.ca_file)
    proc = run_client([offlineimap, "-c", str(cfg), "-o", "-u", "basic"], tmp_path)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "certificate" in (proc.stdout + proc.stderr).lower()
    inbox = tmp_path / "Mail" / "INBOX"
    assert not inbox.exists() or maildir(inbox) == {}


# --- fetchmail ---------------------------------------------------------------------------------------------

MDA = """import os, sys
out = sys.argv[1]
fd = os.open(os.path.join(out, "msg.%03d" % len(os.listdir(out))), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
os.write(fd, sys.stdin.buffer.read())
os.close(fd)
"""


def fetchmail_config(tmp: Path, srv: ServerThread, user: Account, ca: Path, out: Path, *, keep: bool) -> Path:
    mda = tmp / "mda.py"
    mda.write_text(MDA)
    out.mkdir(exist_ok=True)
    rc = tmp / f"fetchmailrc-{out.name}"
    rc.write_text(
        f"""set no bouncemail
set no syslog
poll localhost service {srv.port("imaps")} protocol IMAP auth password timeout {CLIENT_TIMEOUT // 2}
    user "{user.address}" password "{support.PASSWORD}"
    ssl sslcertck sslcertfile "{ca}"
    folder INBOX
    {"keep" if keep else "no keep fetchall"}
    no stripcr
    mda "{sys.executable} {mda} {out}"
"""
    )
    rc.chmod(0o600)  # fetchmail refuses a readable rcfile with a password in it
    return rc


def fetch(fetchmail: str, rc: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return run_client([fetchmail, "-N", "-f", str(rc), "--nosyslog"], home)


def delivered(out: Path) -> dict[str, bytes]:
    """Subject -> the message as the MDA got it, less the one header fetchmail adds (its Received);
    a message delivered twice fails."""
    got: dict[str, bytes] = {}
    for f in sorted(out.iterdir()):
        raw = f.read_bytes()
        assert raw.startswith(b"Received: from localhost "), raw[:200]
        _, _, rest = raw.partition(b"\r\n")
        while rest.startswith(b"\t"):
            rest = rest.partition(b"\r\n")[2]
        subject = subject_of(rest)
        assert subject not in got, f"{subject} delivered twice"
        got[subject] = rest
    return got


@pytest.mark.slow
def test_fetchmail_fetches_with_and_without_keep(
    imap_server: ServerThread, tls_client: ssl.SSLContext, pki: support.TestPKI, tmp_path: Path
) -> None:
    fetchmail = _tool("fetchmail", "fetchmail")
    srv = imap_server
    user = srv.make_pro("fetchmail")
    bodies = {
        "resultat 0": "valeur 0\n",
        "resultat 1": "ligne accentuée é\n" * 3,
        "resultat 2": "." + "x" * 900 + "\n.\n\nfin\n",
    }
    sent = {s: message("lab@lab.test", user.address, s, b) for s, b in bodies.items()}
    for raw in sent.values():
        srv.deliver(user, raw)

    expected = {s: crlf(raw) for s, raw in sent.items()}  # byte for byte, as the server stored it

    def run(out: Path, *, keep: bool) -> dict[str, bytes]:
        proc = fetch(fetchmail, fetchmail_config(tmp_path, srv, user, pki.ca_file, out, keep=keep), tmp_path)
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 0: mail fetched, 1: no mail
        return delivered(out)

    kept = tmp_path / "kept"
    assert run(kept, keep=True) == expected
    assert run(kept, keep=True) == expected  # a second poll delivers nothing again
    c = imaps(srv, tls_client, user)
    assert server_flags(c, "INBOX").keys() == sent.keys()

    moved = tmp_path / "moved"  # they are \Seen now: fetchall takes them again, then deletes them
    assert run(moved, keep=False) == expected
    assert c.select("INBOX")[0] == "OK"
    assert c.search(None, "ALL")[1] == [b""]  # deleted and expunged on the server
    assert run(moved, keep=False) == expected  # nothing more
    c.logout()


@pytest.mark.slow
def test_fetchmail_refuses_a_server_its_ca_did_not_sign(
    imap_server: ServerThread, pki: support.TestPKI, tmp_path: Path
) -> None:
    fetchmail = _tool("fetchmail", "fetchmail")
    srv = imap_server
    user = srv.make_pro("fetchmail")
    srv.deliver(user, message("lab@lab.test", user.address, "resultat", "valeur\n"))
    (tmp_path / "other").mkdir()
    other = support.TestPKI.create(tmp_path / "other")
    out = tmp_path / "out"
    proc = fetch(fetchmail, fetchmail_config(tmp_path, srv, user, other.ca_file, out, keep=True), tmp_path)
    assert proc.returncode not in (0, 1), proc.stdout + proc.stderr
    assert "certificate" in (proc.stdout + proc.stderr).lower()
    assert delivered(out) == {}
