"""A real client nobody here wrote: Debian's mbsync (isync) syncs 200 messages down and changes back up.

Down: 200 messages land in a local Maildir. Up: flags changed in the Maildir
(seen, flagged, trashed) and a new message reach the server, and the server's
view matches the Maildir's.
"""

from __future__ import annotations

import imaplib
import os
import ssl
import subprocess
from pathlib import Path

import pytest

from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import ServerThread, imaps, message

N = 200


def _mbsync() -> str:
    return support.tool("mbsync", "isync")


def write_config(tmp: Path, srv: ServerThread, user: Account, ca: Path) -> Path:
    maildir = tmp / "Mail"
    maildir.mkdir()
    cfg = tmp / "mbsyncrc"
    cfg.write_text(
        f"""IMAPAccount masante
Host localhost
Port {srv.port("imaps")}
User {user.address}
Pass "{support.PASSWORD}"
SSLType IMAPS
CertificateFile {ca}
AuthMechs PLAIN
Timeout 60

IMAPStore remote
Account masante

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Sent
Create Both
Expunge Both
SyncState *
Sync All
"""
    )
    return cfg


def run(mbsync: str, cfg: Path, home: Path) -> str:
    proc = subprocess.run(
        [mbsync, "-c", str(cfg), "-a"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "HOME": str(home)},
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def maildir_messages(folder: Path) -> dict[str, str]:
    """Subject -> Maildir flags (the letters after ':2,')."""
    out: dict[str, str] = {}
    for sub in ("cur", "new"):
        for f in (folder / sub).iterdir():
            subject = next(
                line.split(":", 1)[1].strip()
                for line in f.read_text(errors="replace").splitlines()
                if line.lower().startswith("subject:")
            )
            out[subject] = f.name.split(":2,", 1)[1] if ":2," in f.name else ""
    return out


def server_view(c: imaplib.IMAP4_SSL, mailbox: str) -> dict[str, str]:
    c.select(mailbox, readonly=True)
    typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    letters = {b"\\Seen": "S", b"\\Flagged": "F", b"\\Answered": "R", b"\\Deleted": "T", b"\\Draft": "D"}
    out: dict[str, str] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        flags_part = item[0].split(b"FLAGS (", 1)[1].split(b")", 1)[0].split()
        subject = item[1].decode().split(":", 1)[1].strip()
        out[subject] = "".join(sorted(letters[f] for f in flags_part if f in letters))
    return out


@pytest.mark.slow
def test_mbsync_round_trip(
    imap_server: ServerThread, tls_client: ssl.SSLContext, pki: support.TestPKI, tmp_path: Path
) -> None:
    mbsync = _mbsync()
    srv = imap_server
    user = srv.make_pro("mbsync")
    for i in range(N):
        flags = ("\\Seen",) if i % 3 == 0 else ()
        srv.deliver(user, message("lab@lab.test", user.address, f"resultat {i:03d}", f"valeur {i}\n"), flags=flags)
    cfg = write_config(tmp_path, srv, user, pki.ca_file)

    run(mbsync, cfg, tmp_path)
    local = maildir_messages(tmp_path / "Mail" / "INBOX")
    assert len(local) == N
    assert local["resultat 000"] == "S" and local["resultat 001"] == ""

    # change things locally: read some, flag some, delete one, write a new one in Sent
    inbox = tmp_path / "Mail" / "INBOX"
    for f in sorted((inbox / "cur").iterdir()) + sorted((inbox / "new").iterdir()):
        text = f.read_text(errors="replace")
        name, _, flags = f.name.partition(":2,")
        new_flags = set(flags)
        if "Subject: resultat 001" in text:
            new_flags.add("S")
        if "Subject: resultat 002" in text:
            new_flags.add("F")
        if "Subject: resultat 004" in text:
            new_flags.add("T")
        if new_flags != set(flags):
            f.rename(inbox / "cur" / f"{name}:2,{''.join(sorted(new_flags))}")
    sent = tmp_path / "Mail" / "Sent"
    for sub in ("cur", "new", "tmp"):
        (sent / sub).mkdir(parents=True, exist_ok=True)
    (sent / "cur" / "1700000000.1.local:2,S").write_bytes(message(user.address, "lab@lab.test", "reponse", "merci\n"))

    run(mbsync, cfg, tmp_path)

    c = imaps(srv, tls_client, user)
    view = server_view(c, "INBOX")
    local = maildir_messages(inbox)
    assert len(view) == N - 1 and "resultat 004" not in view  # trashed locally, expunged on both sides
    assert view["resultat 001"] == "S" and view["resultat 002"] == "F" and view["resultat 003"] == "S"
    assert view == local
    assert server_view(c, "Sent") == {"reponse": "S"}
    c.logout()
