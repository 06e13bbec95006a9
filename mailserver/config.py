"""Configuration: one TOML file, every key overridable by the environment.

Invariants:
- The file is found by ``--config PATH`` (both commands, before any subcommand),
  else ``MASANTE_CONFIG``, else ``var/masante.toml`` in the working directory.
- Every key ``[section] key`` can be overridden by ``MASANTE_SECTION_KEY``
  (``MASANTE_DATABASE_URL``, ``MASANTE_PORTS_IMAPS``...). Environment wins over file.
- Relative paths (and a relative SQLite file in ``database.url``) are relative to
  the directory holding the configuration file, so ``var/`` can move as a whole.
- Unknown sections or keys are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from policies.content import DEFAULT_ALLOWED_TYPES

DEFAULT_CONFIG = Path("var/masante.toml")
ENV_PREFIX = "MASANTE_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


@dataclass
class ServerSection:
    hostname: str = "localhost"
    bind: str = "0.0.0.0"  # noqa: S104 - a mail server listens on the network unless told otherwise
    #: server processes sharing the ports (``mailserver.supervisor``): one per core uses the machine
    processes: int = 1
    #: SQLite: seconds between two looks for changes made by processes that do not say so (``masante-admin``);
    #: server processes of one database tell each other at once (``notify.SiblingRelay``)
    change_poll_interval: float = 1.0

    @property
    def shared_ports(self) -> bool:
        """Whether the listeners bind with ``SO_REUSEPORT``: only when several processes share them, so that a
        second server started by mistake still fails with "address in use"."""
        return self.processes > 1


@dataclass
class PortsSection:
    """A negative port disables a listener; 0 lets the system choose a free one (tests)."""

    mx: int = 25
    submission: int = 587
    submissions: int = 465
    imap: int = 143
    imaps: int = 993
    #: the HTTPS service (autoconfiguration, /metrics, /healthz, /readyz); off unless set (443 is often taken)
    web: int = -1


@dataclass
class DatabaseSection:
    url: str = "sqlite:///masante.db"
    echo: bool = False


@dataclass
class KeysSection:
    kek_file: Path = Path("keys/kek.key")
    dkim_dir: Path = Path("keys/dkim")
    #: the HMAC key of app passwords and one-time codes (``MASANTE_CREDENTIAL_KEY``, base64, instead); made on first use
    credential_key_file: Path = Path("keys/credentials.key")


@dataclass
class TlsSection:
    cert: Path = Path("tls/server.pem")
    key: Path = Path("tls/server.key")
    ca: Path = Path("tls/ca.pem")  # the CA clients must trust to reach this server
    trust_ca: Path = Path("tls/ca.pem")  # the trust-space CA that operators' client certificates chain to
    client_cert: Path = Path("tls/server.pem")  # presented when relaying to other operators (mutual TLS)
    client_key: Path = Path("tls/server.key")
    #: the CA that application and organisation mailboxes' client certificates chain to (SASL EXTERNAL on
    #: submission and IMAP); empty: no client certificate is asked for there and EXTERNAL is not offered
    account_ca: str = ""


@dataclass
class DomainsSection:
    patient: str = "patient.masante.fr"


@dataclass
class PolicySection:
    #: Annuaire Santé profession codes a patient may write to first (21: pharmacien)
    patient_first_professions: list[str] = field(default_factory=lambda: ["21"])
    #: other operators' patient domains: their mailboxes are patients (Mon Espace Santé's is patient.mssante.fr)
    remote_patient_domains: list[str] = field(default_factory=lambda: ["patient.mssante.fr"])
    #: attachment types accepted (``type/*`` for a whole family): PDF, CDA, XDM zip, images, DICOM, text, iCalendar;
    #: executables are refused whatever this says
    allowed_attachment_types: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED_TYPES))
    #: largest message per recipient domain, ``domain=size`` (size in bytes, or with KB/MB): ["labo.fr=10MB"]
    domain_size_limits: list[str] = field(default_factory=list)
    #: recipients a sender may address per hour (0: no limit), by kind of sender
    rate_professional_per_hour: int = 3000
    rate_application_per_hour: int = 50000
    rate_patient_per_hour: int = 60
    #: per sender address at another operator (mail arriving on the MX port)
    rate_remote_per_hour: int = 10000


@dataclass
class LimitsSection:
    max_message_size: int = 50 * 1024 * 1024
    patient_message_size: int = 25 * 1024 * 1024
    #: a message past this many octets needs one of ``large_messages_at_once`` slots to be read on
    #: (``mailserver.smtp.gate``); 0: no bound
    large_message_size: int = 8 * 1024 * 1024
    large_messages_at_once: int = 2
    #: seconds a large message waits for a slot before it is answered 451 4.3.2 (under the client's
    #: 3-minute data block timeout, RFC 5321 §4.5.3.2.5)
    large_message_wait: float = 120.0
    #: octets/s a large message must average once it holds a slot (after smtp.data_rate_grace): a slot is
    #: not held for hours by a client trickling 50 MB; below it, 421 4.4.2 and the slot is free again
    large_message_min_rate: int = 16 * 1024
    #: a DATA keeping more than this many octets goes on to an encrypted temporary file under smtp.spool_dir
    #: (``mailserver.smtp.dataspool``), not memory; 0: always in memory
    spool_threshold: int = 1024 * 1024
    #: octets a patient's vault (``Documents/`` and below) may hold; an APPEND past it is NO [OVERQUOTA]
    vault_quota: int = 1024 * 1024 * 1024
    #: failed logins from one source address (any account) before it is locked out (``directory.limits``)
    login_failures_per_source: int = 10
    #: failed logins on one account name before addresses that failed are locked out of it
    login_failures_per_account: int = 5
    #: seconds of quiet after which failures are forgotten
    login_failure_window: int = 900
    #: seconds the first lockout lasts; each further one within a day doubles it, up to ``lockout_max``
    lockout_base: int = 60
    lockout_max: int = 3600
    #: open connections from one source address, all doors of a process together (``ConnectionCaps``)
    connections_per_source: int = 100
    #: of which not logged in yet (IMAP before LOGIN, submission before AUTH); the MX door counts above only
    unauthenticated_per_source: int = 50
    #: sessions logged in to one account at once (IMAP and SMTP submission together)
    connections_per_account: int = 50
    #: octets an account may hold, all its mailboxes together (RFC 9208 STORAGE, ``mailserver.quota``), by
    #: kind of account; 0: no quota. Past it IMAP APPEND and COPY are NO [OVERQUOTA], SMTP 552 5.2.2
    quota_patient: int = 2 * 1024 * 1024 * 1024
    quota_professional: int = 5 * 1024 * 1024 * 1024
    quota_organisation: int = 10 * 1024 * 1024 * 1024
    quota_application: int = 10 * 1024 * 1024 * 1024
    #: messages an account may hold, all its mailboxes together (RFC 9208 MESSAGE), by kind of account; 0: no
    #: limit on the count. Enforced at the same doors as the octets above, with the same replies
    quota_messages_patient: int = 0
    quota_messages_professional: int = 0
    quota_messages_organisation: int = 0
    quota_messages_application: int = 0


@dataclass
class RetentionSection:
    closed_account_days: int = 3650


@dataclass
class SecuritySection:
    scrypt_log_n: int = 15
    #: seconds a verified (address, password) pair skips the password hash (Dovecot's auth_cache_ttl); 0: off
    auth_cache_ttl: int = 60
    #: verified credentials remembered per process at most (least recently used forgotten first)
    auth_cache_size: int = 10_000
    #: a patient's password alone does not open IMAP: an app password does (from the enrolment page, with a
    #: one-time code); the demo turns it off
    patient_second_factor: bool = True


@dataclass
class EnrolmentSection:
    """Device enrolment on the HTTPS service: password, then a one-time code (``directory.enrolment``)."""

    #: how codes are sent: ``file`` (one file per code under ``outbox_dir``: the demo), ``smtp`` (to the
    #: account's contact address through ``smtp_host``), ``sms`` (a JSON POST to ``sms_url``); empty: off
    notifier: str = ""
    outbox_dir: Path = Path("outbox")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    #: the From of the code's message
    sender: str = ""
    sms_url: str = ""
    #: seconds a code stays valid, and wrong codes before the enrolment is locked
    code_ttl: int = 600
    max_tries: int = 5


@dataclass
class SmtpSection:
    """The SMTP listeners (RFC 5321). Every bound here is named and crossed by a test."""

    #: RCPT commands accepted per transaction (RFC 5321 §4.5.3.1.8 asks for at least 100); beyond: 452 4.5.3
    max_recipients: int = 100
    #: Received header fields a message may carry before it is refused as looping (RFC 5321 §6.3): 554 5.4.6
    max_hops: int = 100
    #: longest DATA line in octets, CRLF included (RFC 5321 §4.5.3.1.6)
    max_line_length: int = 1000
    #: seconds a client may stay silent between commands (RFC 5321 §4.5.3.2.7: at least 5 minutes)
    command_timeout: int = 300
    #: seconds a command line may take from its first octet to its CRLF, however steadily it trickles in
    #: (a silence-only timeout lets one byte every few seconds hold a connection for ever): past it, 421 4.4.2
    command_line_deadline: float = 60.0
    #: the slowest DATA accepted, in octets per second averaged since the 354, once data_rate_grace has
    #: passed (0: no floor): below it, 421 4.4.2
    data_min_rate: int = 1024
    #: seconds of DATA before data_min_rate is checked (a client's first round trips and TLS records)
    data_rate_grace: float = 30.0
    #: client certificate key types accepted on the MX port (RSA, EC, Ed25519, Ed448, DSA); the MSSanté
    #: profile uses RSA: any other certificate is refused at MAIL with 550 5.7.1
    mx_client_key_types: list[str] = field(default_factory=lambda: ["RSA"])
    #: verify DKIM keys missing from the local key table against public DNS (closed networks: false)
    dkim_dns: bool = False
    #: sign outbound mail from local domains that have a key in keys.dkim_dir
    dkim_sign: bool = True
    #: where large DATA is spooled while read, encrypted under a per-message key held in memory only
    #: (files 0600; leftovers removed at startup)
    spool_dir: Path = Path("spool")


@dataclass
class QueueSection:
    """The outbound queue: retry schedule and delivery bounds (durations in seconds)."""

    #: first retry this long after a temporary failure; each later one waits ``backoff_factor`` times longer
    first_retry: int = 300
    backoff_factor: float = 2.0
    #: the longest wait between two attempts
    max_retry_interval: int = 4 * 3600
    #: after this long without delivery the message is bounced to its sender (DSN, RFC 3464)
    bounce_after: int = 5 * 24 * 3600
    #: a "delayed" DSN is sent once after this long, to senders who asked for NOTIFY=DELAY
    delay_warning_after: int = 4 * 3600
    #: how often the worker looks for due messages (it is also woken at once by new mail)
    poll_interval: float = 5.0
    #: deliveries in flight at once in this process
    concurrency: int = 10
    connect_timeout: int = 30
    command_timeout: int = 300
    #: how long a worker's claim on a message lasts before another worker may retry it
    lease: int = 900
    #: for an operator without an MTA host in the trust space, look up the domain's MX in public DNS
    mx_lookup: bool = False


@dataclass
class ImapSection:
    """The IMAP listeners (RFC 3501). Every bound here is named and crossed by a test."""

    #: longest command line in octets, literals apart (RFC 7162 §4 asks for at least 8192); beyond: BAD
    max_line: int = 65536
    #: largest literal (an APPEND's message) in octets; beyond: NO [TOOBIG] (BYE for a LITERAL+ one)
    max_literal: int = 50 * 1024 * 1024
    #: deepest nesting of parenthesised lists (SEARCH programs); beyond: BAD
    max_depth: int = 32
    #: invalid commands (BAD) a connection may send before it is closed with BYE
    bad_command_limit: int = 10
    #: seconds an unauthenticated client may stay silent (RFC 3501 §5.4)
    login_timeout: int = 60
    #: seconds an authenticated client may stay silent, IDLE included (RFC 3501 §5.4: at least 30 minutes)
    idle_timeout: int = 1800
    #: seconds for a TLS handshake (IMAPS and STARTTLS)
    tls_handshake_timeout: int = 30
    #: seconds a command line may take once its first byte arrived, however it trickles in (then BYE);
    #: the literals of an authenticated command (APPEND's message) are exempt: max_literal bounds them
    line_deadline: float = 60.0


@dataclass
class AuditSection:
    """The audit chain's key and its anchors outside the database (durations in seconds)."""

    #: the HMAC key of the chain, beside the KEK (``MASANTE_AUDIT_KEY``, base64, instead of the file)
    key_file: Path = Path("keys/audit.key")
    #: signed checkpoints of the chain, appended (make it append-only: ``chattr +a``)
    anchor_file: Path = Path("audit-anchors.log")
    #: a checkpoint at least every this many entries...
    anchor_every: int = 100
    #: ...and this long after an entry that is not anchored yet (and at clean shutdown)
    anchor_interval: int = 300


@dataclass
class DnsSection:
    #: resolvers asked for MX and DKIM records, ``host`` or ``host:port`` (``[::1]:53``); empty: the system's
    nameservers: list[str] = field(default_factory=list)


@dataclass
class WhitelistSection:
    """``masante-admin trust sync``: the national whitelist, downloaded over HTTPS."""

    #: where the list is published (its checksum, when the mirror has one, at the same URL + ``.sha256``)
    url: str = ""
    #: the CA bundle the mirror's certificate must chain to (empty: the system's store)
    ca_file: str = ""
    #: largest share of the whitelisted domains one sync may remove without ``--force``
    max_removed_share: float = 0.10
    #: hours between two synchronisations the server runs itself when ``url`` is set (0: only by hand)
    sync_every: float = 24.0


@dataclass
class OauthSection:
    """Bearer tokens (SASL XOAUTH2 and OAUTHBEARER, RFC 7628): JWTs of an OpenID Connect provider such as
    Pro Santé Connect. Off unless ``issuer`` is set; then ``audience`` and one of ``jwks_file``/``jwks_url``
    are required (``directory.oauth``)."""

    #: the ``iss`` every token must carry (for Pro Santé Connect, the URL of its realm)
    issuer: str = ""
    #: the ``aud`` a token must name (this server's client id at the provider)
    audience: str = ""
    #: the provider's keys (a JWKS, JSON) from a file, re-read when a token names an unknown key...
    jwks_file: str = ""
    #: ...or fetched over HTTPS, kept, fetched again only when a token names an unknown key (at most once
    #: a minute) or when older than jwks_max_age
    jwks_url: str = ""
    #: the CA bundle the JWKS server's certificate must chain to (empty: the system's store)
    jwks_ca_file: str = ""
    #: seconds a fetched JWKS is used before it is fetched again at the next login
    jwks_max_age: int = 3600
    #: the claim naming the professional: PSC puts the national id 8+RPPS in preferred_username
    identity_claim: str = "preferred_username"
    #: seconds of clock skew tolerated on exp and nbf
    leeway: int = 5


@dataclass
class LogSection:
    level: str = "INFO"


@dataclass
class Config:
    server: ServerSection = field(default_factory=ServerSection)
    ports: PortsSection = field(default_factory=PortsSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    keys: KeysSection = field(default_factory=KeysSection)
    tls: TlsSection = field(default_factory=TlsSection)
    domains: DomainsSection = field(default_factory=DomainsSection)
    policy: PolicySection = field(default_factory=PolicySection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    imap: ImapSection = field(default_factory=ImapSection)
    log: LogSection = field(default_factory=LogSection)
    audit: AuditSection = field(default_factory=AuditSection)
    smtp: SmtpSection = field(default_factory=SmtpSection)
    queue: QueueSection = field(default_factory=QueueSection)
    dns: DnsSection = field(default_factory=DnsSection)
    whitelist: WhitelistSection = field(default_factory=WhitelistSection)
    oauth: OauthSection = field(default_factory=OauthSection)
    enrolment: EnrolmentSection = field(default_factory=EnrolmentSection)

    #: the file this configuration was read from (not a key)
    path: Path = field(default=DEFAULT_CONFIG, metadata={"internal": True})

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent

    def resolve(self, p: Path) -> Path:
        """A configured path made absolute against the configuration's directory."""
        return p if p.is_absolute() else self.base_dir / p

    @property
    def database_url(self) -> str:
        """The SQLAlchemy async URL (driver added, relative SQLite file resolved)."""
        return async_database_url(self.database.url, self.base_dir)

    def to_toml(self) -> str:
        out: dict[str, dict[str, Any]] = {}
        for sec in _sections():
            values = {}
            for f in dataclasses.fields(getattr(self, sec.name)):
                v = getattr(getattr(self, sec.name), f.name)
                values[f.name] = str(v) if isinstance(v, Path) else v
            out[sec.name] = values
        return tomli_w.dumps(out)


def async_database_url(url: str, base_dir: Path) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"database.url {url!r} is not a URL (sqlite:///file.db or postgresql://...)")
    driver = scheme.split("+", 1)[0]
    if driver == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        if path in ("", ":memory:"):
            raise ConfigError("database.url: an in-memory SQLite database would lose every message")
        p = Path(path)
        if not p.is_absolute():
            p = base_dir / p
        return f"sqlite+aiosqlite:///{p}"
    if driver in ("postgresql", "postgres"):
        return f"postgresql+asyncpg://{rest}"
    raise ConfigError(f"database.url: unsupported database {driver!r} (use sqlite or postgresql)")


def _sections() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Config) if not f.metadata.get("internal")]


def _convert(value: Any, typ: Any, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if typ is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if typ is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    origin = typing.get_origin(typ)
    if origin in (list, tuple):
        (item,) = typing.get_args(typ)[:1]
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        conv = [_convert(i.strip() if isinstance(i, str) else i, item, where) for i in items if i != ""]
        return conv if origin is list else tuple(conv)
    raise ConfigError(f"{where}: unsupported type {typ!r}")  # a bug in a section definition


def build(data: Mapping[str, Any], env: Mapping[str, str], path: Path) -> Config:
    """A Config from parsed TOML and an environment; every error names its key."""
    cfg = Config(path=path)
    known = {s.name for s in _sections()}
    for name in data:
        if name not in known:
            raise ConfigError(f"{path}: unknown section [{name}] (known: {', '.join(sorted(known))})")
    for sec in _sections():
        section = getattr(cfg, sec.name)
        hints = typing.get_type_hints(type(section))
        given = data.get(sec.name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: [{sec.name}] must be a table")
        names = {f.name for f in dataclasses.fields(section)}
        for key in given:
            if key not in names:
                raise ConfigError(f"{path}: unknown key {sec.name}.{key} (known: {', '.join(sorted(names))})")
        for f in dataclasses.fields(section):
            env_key = f"{ENV_PREFIX}{sec.name}_{f.name}".upper()
            if env_key in env:
                value, where = env[env_key], env_key
            elif f.name in given:
                value, where = given[f.name], f"{sec.name}.{f.name}"
            else:
                continue
            setattr(section, f.name, _convert(value, hints[f.name], where))
    return cfg


def config_path(explicit: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit)
    if env.get("MASANTE_CONFIG"):
        return Path(env["MASANTE_CONFIG"])
    return DEFAULT_CONFIG


def load(explicit: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the configuration file (it must exist) and apply the environment."""
    env = os.environ if env is None else env
    path = config_path(explicit, env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {path} not found (run `masante-admin init`, or give --config / MASANTE_CONFIG)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return build(data, env, path)


def demo(path: Path) -> Config:
    """The demo configuration written by ``init --demo``: loopback only, unprivileged ports."""
    cfg = Config(path=path)
    cfg.server.hostname = "localhost"
    cfg.server.bind = "127.0.0.1"
    cfg.ports = PortsSection(mx=2525, submission=2587, submissions=2465, imap=2143, imaps=2993)
    cfg.database.url = "sqlite:///masante.db"
    cfg.security.patient_second_factor = False  # demo patients log in with their password alone
    cfg.enrolment.notifier = "file"  # one-time codes land in var/outbox/
    return cfg
