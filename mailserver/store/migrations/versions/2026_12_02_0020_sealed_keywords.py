"""IMAP keywords kept under the metadata key: a message labelled ``Diabete`` does not say so at rest.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

- ``messages.flags`` keeps system flags and the registered keywords plain
  (``mailserver.flags.PLAIN``); any other keyword becomes ``%`` and the base64url
  of its fixed seal (``MetadataKey.seal_fixed``, kind ``keyword``, bound to the
  account id), the flags sorted again. No column changes.
- The keywords already there are sealed with the credential key of the
  configuration (``masante-admin db upgrade`` passes it); without it, a
  database that holds keywords stops here with a sentence saying so (as 0018).
- Downgrading opens every keyword again, with the same key.
- The rules are copied here, not imported: this revision keeps doing what it did when the code moves on.
"""

import base64
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND = "keyword"
SEALED_MARK = "%"
PLAIN = frozenset(
    k.lower()
    for k in ("$MDNSent", "$Forwarded", "$Junk", "$NotJunk", "$Phishing", "$Important", "$SubmitPending", "$Submitted")
)
_ROWS = sa.text(
    "SELECT m.id, b.account_id, m.flags FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE m.flags <> ''"
)
_WRITE = sa.text("UPDATE messages SET flags = :f WHERE id = :i")


def _need_key(rows: int) -> Any:
    loader: Callable[[], Any] | None = context.config.attributes.get("metadata_key")
    try:
        key = loader() if loader else None
    except RuntimeError:
        key = None
    if key is None:
        raise RuntimeError(
            f"the keywords of {rows} messages are sealed or opened with the credential key: "
            "migrate with `masante-admin db upgrade` and the server's configuration, which holds that key"
        )
    return key


def _seal(key: Any, account_id: int, flag: str) -> str:
    if flag.startswith("\\") or flag.startswith(SEALED_MARK) or flag.lower() in PLAIN:
        return flag
    sealed = key.seal_fixed(flag.encode("utf-8"), kind=KIND, bound_to=str(account_id).encode())
    return SEALED_MARK + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def _open(key: Any, account_id: int, flag: str) -> str:
    if not flag.startswith(SEALED_MARK):
        return flag
    raw = base64.urlsafe_b64decode(flag[1:] + "=" * (-(len(flag) - 1) % 4))
    return str(key.open_fixed(raw, kind=KIND, bound_to=str(account_id).encode()).decode("utf-8"))


def _rewrite(change: Callable[[Any, int, str], str], needs: Callable[[str], bool]) -> None:
    bind = op.get_bind()
    rows = [r for r in bind.execute(_ROWS).all() if any(needs(f) for f in r[2].split())]
    if not rows:
        return
    key = _need_key(len(rows))
    bind.execute(
        _WRITE,
        [{"f": " ".join(sorted({change(key, acc, f) for f in flags.split()})), "i": id_} for id_, acc, flags in rows],
    )


def upgrade() -> None:
    _rewrite(_seal, lambda f: not (f.startswith("\\") or f.startswith(SEALED_MARK) or f.lower() in PLAIN))


def downgrade() -> None:
    _rewrite(_open, lambda f: f.startswith(SEALED_MARK))
