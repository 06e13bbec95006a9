"""Login failure counters shared by every process, and each account's last login (``directory.limits``).

Invariants:
- ``login_counters`` has one row per key: ``peer:<ip>`` for a source address,
  ``acct:<sha256 of the canonical name>`` for an account name (a digest, so that
  no client text, not even an unknown login name, is stored). ``failures``
  counts the attempts of the current window, including those still in flight
  (counted when they start, given back when they succeed); ``locked_until`` is
  set while a lockout lasts; ``lockouts`` counts the lockouts of the last day
  (it makes the next window longer).
- ``account_activity`` has at most one row per account: its last successful
  login, and when its owner was last warned that the mailbox is unused.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base


class LoginCounter(Base):
    __tablename__ = "login_counters"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime | None]
    locked_until: Mapped[dt.datetime | None]
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    last_lockout_at: Mapped[dt.datetime | None]


class AccountActivity(Base):
    __tablename__ = "account_activity"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    last_login_at: Mapped[dt.datetime | None]
    warned_at: Mapped[dt.datetime | None]
