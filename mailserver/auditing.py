"""The audit trail of a process, built from the configuration: the chain key and the anchor file.

Invariants:
- The key comes from ``[audit] key_file`` (or ``MASANTE_AUDIT_KEY``), never
  from the database. Without it (no such file) there is no trail: commands
  that write no audit entry still run (``db upgrade``), the first audited
  commit fails with ``AuditKeyMissing``, and the server refuses to start. A
  file that is there but unreadable or malformed is an error at once.
- Checkpoints go to ``[audit] anchor_file`` every ``anchor_every`` entries or
  ``anchor_interval`` seconds, and when the database is released.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from crypto.audit import load_audit_key
from mailserver.config import Config
from mailserver.store.auditchain import AnchorFile, AuditTrail


def open_trail(config: Config, env: Mapping[str, str] | None = None) -> AuditTrail | None:
    env = os.environ if env is None else env
    key_file = config.resolve(config.audit.key_file)
    if not env.get("MASANTE_AUDIT_KEY") and not key_file.exists():
        return None
    key = load_audit_key(key_file, env.get("MASANTE_AUDIT_KEY"))
    return AuditTrail(
        key.chain_key,
        AnchorFile(config.resolve(config.audit.anchor_file), key.anchor_key),
        anchor_every=config.audit.anchor_every,
        anchor_interval=float(config.audit.anchor_interval),
    )
