"""The server's Prometheus metrics (``prometheus_client``), scraped at ``/metrics`` on the HTTPS service.

Invariants:
- One ``CollectorRegistry`` per process (``REGISTRY``), not the library's
  global one: what a process exposes is what this module defines, and the
  web service renders exactly this registry.
- Every label takes its value from a small closed set written in the code: a
  door name, a reply code class, a refusal reason constant, an IMAP command
  name, a protocol name. Never an address, a domain, a subject or any text
  from the network (an unbounded label set is a memory leak and a data leak).
- Instrumenting is one call at the spot where the thing happens; this module
  does no I/O. What must be read from the store (queue depth and age) is
  refreshed by the web service just before it renders a scrape.

See Also: the Prometheus exposition format
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

#: connections accepted, per door (mx, submission, submissions, imap, imaps)
CONNECTIONS = Counter("masante_connections", "Connections accepted, per door", ["door"], registry=REGISTRY)
#: SMTP replies sent, by code class (2xx, 3xx, 4xx, 5xx)
SMTP_REPLIES = Counter("masante_smtp_replies", "SMTP replies sent, by code class", ["code_class"], registry=REGISTRY)
#: message copies filed into a mailbox, by the path they came in through (mx, submission, dsn, imap-append);
#: counted when the unit of work that ``deliver`` added them to commits (``uow.after_commit``): a delivery rolled
#: back, or run again after a PostgreSQL conflict, is counted once or not at all
DELIVERIES = Counter(
    "masante_deliveries", "Message copies delivered into a mailbox, per source", ["source"], registry=REGISTRY
)
#: refusals at a door, by stage (mail, rcpt, data) and reason (the policy's reason constant)
REFUSALS = Counter("masante_refusals", "Refusals, by stage and reason", ["stage", "reason"], registry=REGISTRY)
#: failed logins, by protocol (imap, smtp) and why (unknown-account, bad-password, status-...)
LOGIN_FAILURES = Counter(
    "masante_login_failures", "Failed logins, per protocol and reason", ["protocol", "reason"], registry=REGISTRY
)
#: login attempts refused at once, unchecked, by protocol and scope (source: the address is locked out;
#: account: the account name is, for addresses that failed on it)
LOGIN_REFUSED = Counter(
    "masante_login_refused", "Login attempts refused by a lockout", ["protocol", "scope"], registry=REGISTRY
)
#: lockouts begun, by scope (source, account)
LOGIN_LOCKOUTS = Counter("masante_login_lockouts", "Lockouts begun, per scope", ["scope"], registry=REGISTRY)
#: connections refused by a cap, by door and cap (source, unauthenticated, account)
CONNECTIONS_REFUSED = Counter(
    "masante_connections_refused", "Connections refused by a cap, per door and cap", ["door", "cap"], registry=REGISTRY
)
#: IMAP commands run, by command name
IMAP_COMMANDS = Counter("masante_imap_commands", "IMAP commands run, per command", ["command"], registry=REGISTRY)
#: messages waiting in the outbound queue, and the age of the oldest (refreshed at each scrape)
#: store latency: a writing unit of work's commit (audit chaining, NOTIFY and the fsync included), per backend
STORE_COMMIT_SECONDS = Histogram(
    "masante_store_commit_seconds",
    "Time to commit a writing unit of work, per database backend",
    ["backend"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
#: how long writing units of work queue for SQLite's one writer before they start (0 on PostgreSQL: not measured)
STORE_WRITER_WAIT_SECONDS = Histogram(
    "masante_store_writer_wait_seconds",
    "Time a writing unit of work waited for the SQLite writer",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("masante_queue_depth", "Messages in the outbound queue", registry=REGISTRY)
QUEUE_OLDEST_AGE = Gauge("masante_queue_oldest_age_seconds", "Age of the oldest queued message", registry=REGISTRY)

_CODE_CLASSES = frozenset("2345")


def smtp_reply(status: str | bytes) -> None:
    """Count one SMTP reply line by its code class (``250 ...`` is ``2xx``; anything else is not counted)."""
    first = status[:1].decode("ascii", "replace") if isinstance(status, bytes) else status[:1]
    if first in _CODE_CLASSES:
        SMTP_REPLIES.labels(f"{first}xx").inc()


#: group commit: writing units of work per database transaction (SQLite shares one among concurrent writers;
#: PostgreSQL commits each unit alone, observed as 1), per backend
STORE_GROUP_COMMIT_UNITS = Histogram(
    "masante_store_group_commit_units",
    "Writing units of work committed per database transaction, per database backend",
    ["backend"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
