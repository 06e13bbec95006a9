"""``make bench-peers``: the project's IMAP and SMTP workloads on Dovecot, Postfix→Dovecot and masante, side by side.

Invariants:
- Only PRIVATE instances run: Dovecot and Postfix each get their own
  configuration, base/queue directories and log files under one temporary
  directory, listen on 127.0.0.1 high ports only (never 25, 143, 993), and the
  system services are never started: the Debian packages are installed (when
  missing) behind a ``policy-rc.d`` that forbids starting services, and any
  daemon the installation started anyway is stopped before the benchmark.
- Everything started here runs in its own process group and is stopped on the
  way out, also on Ctrl-C, SIGTERM or an error (``try/finally`` around the
  whole run, ``killpg`` TERM then KILL).
- Both sides speak TLS (one throw-away CA signs the single server certificate
  all three servers use) and authenticate with the same memory-hard scheme of
  the same memory cost: masante's scrypt (``N = 2**ln, r = 8``: ``128·r·N``
  bytes) against Dovecot's ARGON2ID with the same ``m``, its time cost ``t``
  raised until one verification costs at least what masante's does. Both are
  measured and printed. Dovecot's ``auth_cache`` is on with the TTL of
  masante's credential cache, so the two sides cache verified logins alike.
- The clients are the project's own (``bench/imap_bench.py``,
  ``bench/smtp_bench.py``); each workload is bounded in time, and runs several
  times (min/median/max). Postfix's ``250`` means queued (fsync'd); its
  delivery to Dovecot over LMTP is checked after the runs, not timed.

    .venv/bin/python bench/peers.py [--runs 3] [--seconds 20] [--clients 20] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import pwd
import random
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PACKAGES = ("dovecot-imapd", "dovecot-lmtpd", "postfix")
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
SYSTEM_PORTS = (25, 110, 143, 465, 587, 993, 995, 24)


# --- installation ------------------------------------------------------------------------------------------


def _missing() -> list[str]:
    need = {
        "dovecot-imapd": "/usr/lib/dovecot/imap",
        "dovecot-lmtpd": "/usr/lib/dovecot/lmtp",
        "postfix": "/usr/sbin/postfix",
    }
    return [pkg for pkg in PACKAGES if not Path(need[pkg]).exists()]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_installed() -> None:
    """Install the Debian packages when missing, without letting them start a system service."""
    missing = _missing()
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"bench-peers needs {' '.join(missing)}: run as root, or apt-get install them first")
    print(f"installing {' '.join(missing)} from Debian (services kept stopped)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    ours = not POLICY_RC_D.exists()
    if ours:  # exit 101: "action forbidden by policy" (invoke-rc.d), so no daemon starts
        POLICY_RC_D.write_text("#!/bin/sh\n# written by masante bench-peers for one apt-get install\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        # no /etc/postfix/main.cf: the system Postfix stays unconfigured
        subprocess.run(  # noqa: S603 - fixed arguments
            ["/usr/bin/debconf-set-selections"],
            input="postfix postfix/main_mailer_type select No configuration\n",
            text=True,
            check=True,
            env=env,
        )
        subprocess.run(["/usr/bin/apt-get", "update", "-qq"], check=True, env=env)  # noqa: S603
        subprocess.run(  # noqa: S603
            ["/usr/bin/apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env
        )
    finally:
        if ours:
            POLICY_RC_D.unlink(missing_ok=True)
        _stop_system_services()
    if still := _missing():
        sys.exit(f"could not install {' '.join(still)}")


def _stop_system_services() -> None:
    """Stop a system Dovecot or Postfix if the installation started one anyway."""
    for name in ("postfix", "dovecot"):
        script = Path(f"/etc/init.d/{name}")
        if script.exists():
            subprocess.run([str(script), "stop"], capture_output=True, check=False)  # noqa: S603
    busy = [p for p in SYSTEM_PORTS if _listening(p)]
    if busy:
        print(f"warning: something still listens on 127.0.0.1 port(s) {busy} (not started by this benchmark)")


def _uid(name: str) -> tuple[int, int]:
    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


# --- processes ---------------------------------------------------------------------------------------------


class Processes:
    """Every daemon started here, each in its own session (process group), stopped in reverse order."""

    def __init__(self) -> None:
        self._started: list[tuple[str, subprocess.Popen[bytes], list[str] | None]] = []
        self._groups: dict[str, set[int]] = {}

    def start(self, name: str, argv: list[str], *, log: Path, stop: list[str] | None = None, **kw: Any) -> None:
        out = log.open("ab")
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw)  # noqa: S603
        out.close()
        self._started.append((name, proc, stop))
        self._groups[name] = {proc.pid}

    def adopt_pidfile(self, name: str, pidfile: Path) -> None:
        """A daemon may start its own session: remember its group too (read from its pid file)."""
        with contextlib.suppress(OSError, ValueError):
            self._groups[name].add(os.getpgid(int(pidfile.read_text().split()[0])))

    def alive(self, name: str) -> bool:
        return any(n == name and p.poll() is None for n, p, _ in self._started)

    def stop_all(self) -> None:
        for name, proc, stop in reversed(self._started):
            if stop is not None and proc.poll() is None:  # a graceful stop first (postfix stop)
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(stop, capture_output=True, timeout=20, check=False)  # noqa: S603
            groups = self._groups.get(name, set())
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pgid in groups:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, sig)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and any(_group_alive(g) for g in groups):
                    time.sleep(0.1)
                if not any(_group_alive(g) for g in groups):
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._started.clear()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still counts for killpg: look for a live member
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def wait_port(procs: Processes, name: str, port: int, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _listening(port):
            return
        if not procs.alive(name):
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port}:\n" + "\n".join(tail))


# --- password hashes of the same cost ----------------------------------------------------------------------


class Sodium:
    """libsodium's Argon2id (the library Dovecot's ARGON2ID scheme verifies with), through ctypes."""

    ALG_ARGON2ID13 = 2
    STRBYTES = 128

    def __init__(self) -> None:
        path = ctypes.util.find_library("sodium")
        if path is None:
            sys.exit("libsodium not found (it comes with dovecot-core)")
        lib = ctypes.CDLL(path)
        if lib.sodium_init() < 0:
            sys.exit("libsodium did not initialise")
        lib.crypto_pwhash_str_alg.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulonglong,
            ctypes.c_ulonglong,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        lib.crypto_pwhash_str_verify.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong]
        self.lib = lib

    def hash(self, password: str, *, t: int, m_bytes: int) -> str:
        out = ctypes.create_string_buffer(self.STRBYTES)
        pw = password.encode()
        if self.lib.crypto_pwhash_str_alg(out, pw, len(pw), t, m_bytes, self.ALG_ARGON2ID13) != 0:
            raise RuntimeError("crypto_pwhash_str_alg failed")
        return out.value.decode()

    def verify(self, stored: str, password: str) -> bool:
        pw = password.encode()
        return bool(self.lib.crypto_pwhash_str_verify(stored.encode(), pw, len(pw)) == 0)


def _time_per_call(fn: Callable[[], object], n: int = 15) -> float:
    """The fastest of ``n`` calls: the cost of the work itself, not of a busy machine's scheduling."""
    fn()
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@dataclass(frozen=True)
class Hashes:
    scrypt_log_n: int
    scrypt_ms: float
    argon_t: int
    argon_m: int
    argon_ms: float
    argon_hash: str

    def describe(self) -> str:
        mib = self.argon_m / 2**20
        return (
            f"password hash: masante scrypt ln={self.scrypt_log_n} r=8 p=1 ({mib:g} MiB), "
            f"{self.scrypt_ms:.2f} ms per verification; Dovecot ARGON2ID m={mib:g} MiB t={self.argon_t} p=1, "
            f"{self.argon_ms:.2f} ms per verification (fastest of 15, timed here; same memory, Argon2's "
            "time cost raised until it costs at least scrypt's)"
        )


def same_cost_hashes(password: str, scrypt_log_n: int) -> Hashes:
    from crypto.passwords import R, hash_password, verify_password

    stored = hash_password(password, log_n=scrypt_log_n)
    scrypt = _time_per_call(lambda: verify_password(password, stored))
    m_bytes = 128 * R * 2**scrypt_log_n  # scrypt's memory: 128 · r · N bytes
    sodium = Sodium()
    for t in range(1, 33):
        argon = sodium.hash(password, t=t, m_bytes=m_bytes)
        spent = _time_per_call(lambda argon=argon: sodium.verify(argon, password))  # type: ignore[misc]
        if spent >= scrypt:
            break
    if not sodium.verify(argon, password):
        raise RuntimeError("libsodium does not verify its own hash")
    return Hashes(scrypt_log_n, scrypt * 1000, t, m_bytes, spent * 1000, argon)


# --- Dovecot and Postfix, private instances ------------------------------------------------------------


@dataclass
class Peer:
    imaps: int
    lmtp: int
    auth: int
    smtp: int
    dovecot_dir: Path
    postfix_dir: Path


def write_dovecot(d: Path, *, ports: Peer, cert: Path, key: Path, users: list[str], hashed: str, ttl: int) -> Path:
    """A Dovecot of its own: config, base_dir, state_dir, log, passwd-file and Maildirs all under ``d``."""
    for sub in ("run", "state", "mail"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    uid, gid = _uid("nobody")
    os.chown(d / "mail", uid, gid)
    (d / "mail").chmod(0o700)
    passwd = d / "passwd"
    passwd.write_text("".join(f"{u}:{{ARGON2ID}}{hashed}\n" for u in users))
    passwd.chmod(0o640)
    os.chown(passwd, 0, _uid("dovecot")[1])
    conf = d / "dovecot.conf"
    conf.write_text(
        f"""# masante bench-peers: a private Dovecot, nothing shared with /etc/dovecot
instance_name = masante-bench-{os.getpid()}
base_dir = {d}/run
state_dir = {d}/state
listen = 127.0.0.1
protocols = imap lmtp
log_path = {d}/dovecot.log
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
# the credential cache, as masante's (verified logins only)
auth_cache_size = 10M
auth_cache_ttl = {ttl} s
auth_cache_negative_ttl = 0
# its default, stated: saved mail is fsync'd before APPEND's OK and LMTP's 250
mail_fsync = optimized
mail_location = maildir:{d}/mail/%d/%n
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%d/%n allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ports.imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {ports.lmtp}
  }}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {ports.auth}
  }}
}}
"""
    )
    return conf


MASTER_SERVICES = (
    "pickup cleanup qmgr tlsmgr rewrite bounce defer trace verify flush proxymap proxywrite smtp relay showq "
    "error retry discard local virtual lmtp anvil scache postlog"
).split()


def write_postfix(d: Path, *, ports: Peer, cert: Path, key: Path, domains: list[str], users: list[str]) -> Path:
    """A Postfix of its own (config_directory, queue_directory, data_directory, log under ``d``), LMTP to Dovecot."""
    etc, queue, data = d / "etc", d / "queue", d / "data"
    for sub in (etc, queue, data):
        sub.mkdir(parents=True, exist_ok=True)
    os.chown(data, *_uid("postfix"))
    (etc / "vmailbox").write_text("".join(f"{u} ok\n" for u in users))
    (etc / "main.cf").write_text(
        f"""# masante bench-peers: a private Postfix, nothing shared with /etc/postfix
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = peer.localdomain
mydomain = localdomain
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
virtual_mailbox_domains = {" ".join(domains)}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:{ports.lmtp}
message_size_limit = 30000000
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:127.0.0.1:{ports.auth}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
"""
    )
    lines = [f"127.0.0.1:{ports.smtp} inet n - n - - smtpd"]
    keep = False
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():  # an option of the service above
            if keep:
                lines.append(line)
            continue
        fields = line.split()
        keep = fields[0] in MASTER_SERVICES and fields[1] != "inet"
        if keep:
            fields[4] = "n"  # no chroot: the paths are ours
            lines.append(" ".join(fields))
    (etc / "master.cf").write_text("\n".join(lines) + "\n")
    return etc


def postfix_queue_size(queue: Path) -> int:
    return sum(
        1
        for sub in ("maildrop", "incoming", "active", "deferred", "hold")
        for f in (queue / sub).rglob("*")
        if f.is_file()
    )


def postfix_delivered(d: Path) -> int:
    log = d / "maillog"
    return log.read_text(errors="replace").count(" status=sent ") if log.exists() else 0


# --- the runs --------------------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{min(values):8.1f} {statistics.median(values):8.1f} {max(values):8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each workload (default 3)")
    parser.add_argument("--seconds", type=float, default=20, help="seconds per workload per run (default 20)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent IMAP clients and SMTP connections")
    parser.add_argument("--scrypt-log-n", type=int, default=10, help="masante's scrypt cost (Dovecot's is matched)")
    parser.add_argument(
        "--pg",
        metavar="URL",
        help="a PostgreSQL server (e.g. postgresql://postgres@127.0.0.1:5432/test): masante on a fresh database of"
        " it, dropped afterwards, instead of SQLite",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="masante's server processes (server.processes; default one per core, as Dovecot and Postfix use every"
        " core)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) afterwards")
    args = parser.parse_args()

    ensure_installed()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _interrupt)
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="masante-peers-"))
    tmp.chmod(0o755)  # the peers' own users (dovecot, dovenull, postfix, nobody) walk through it
    admin, args.pg = args.pg, None
    try:
        if admin:
            from tests import support

            # a database of its own, never the one named (it once left masante's tables in the suite's ``test``)
            dsn = support.new_pg_database(admin, "masante_peers")
            args.pg = support.sqlalchemy_pg_url(dsn).replace("+asyncpg", "")
        run_all(args, tmp, procs)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything this benchmark started", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        procs.stop_all()
        if admin and args.pg:
            support.drop_pg_database(admin, dsn)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_all(args: argparse.Namespace, tmp: Path, procs: Processes) -> None:
    from bench import imap_bench, smtp_bench
    from bench.site import free_port, write_site

    t_setup = time.monotonic()
    busy_before = {port for port in SYSTEM_PORTS if _listening(port)}
    site = tmp / "masante"
    site.mkdir()
    cfg, imaps = write_site(
        site,
        listener="imaps",
        also=("submission",),
        database_url=args.pg or "sqlite:///bench.db",
        policy={"rate_professional_per_hour": 0},
        security={"scrypt_log_n": args.scrypt_log_n},
    )
    submission = cfg.ports.submission
    ttl = cfg.security.auth_cache_ttl
    ca, cert, key = site / "ca.pem", site / "server.pem", site / "server.key"
    key.chmod(0o600)
    hashes = same_cost_hashes(imap_bench.PASSWORD, args.scrypt_log_n)

    asyncio.run(imap_bench._seed(cfg, args.clients))  # noqa: SLF001 - the benchmark's own seeding
    asyncio.run(smtp_bench._seed(cfg))  # noqa: SLF001

    peer = Peer(free_port(), free_port(), free_port(), free_port(), tmp / "dovecot", tmp / "postfix")
    imap_users = [f"user{i}@{imap_bench.DOMAIN}" for i in range(args.clients + 1)]
    smtp_users = [smtp_bench.SENDER, *smtp_bench.RECIPIENTS]
    conf = write_dovecot(
        peer.dovecot_dir,
        ports=peer,
        cert=cert,
        key=key,
        users=imap_users + smtp_users,
        hashed=hashes.argon_hash,
        ttl=ttl,
    )
    domains = sorted({u.split("@")[1] for u in imap_users + smtp_users})
    etc = write_postfix(peer.postfix_dir, ports=peer, cert=cert, key=key, domains=domains, users=smtp_users)

    procs.start("dovecot", ["/usr/sbin/dovecot", "-F", "-c", str(conf)], log=peer.dovecot_dir / "stderr.log")
    wait_port(procs, "dovecot", peer.imaps, peer.dovecot_dir / "dovecot.log")
    procs.adopt_pidfile("dovecot", peer.dovecot_dir / "run" / "master.pid")
    procs.start(
        "postfix",
        ["/usr/sbin/postfix", "-c", str(etc), "start-fg"],
        log=peer.postfix_dir / "stderr.log",
        stop=["/usr/sbin/postfix", "-c", str(etc), "stop"],
    )
    wait_port(procs, "postfix", peer.smtp, peer.postfix_dir / "stderr.log")
    procs.adopt_pidfile("postfix", peer.postfix_dir / "queue" / "pid" / "master.pid")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASANTE_")}
    server_log = site / "server.log"
    procs.start(
        "masante",
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(site / "masante.toml")]
        + ["--processes", str(args.processes)],
        log=server_log,
        cwd=ROOT,
        env=env,
    )
    wait_port(procs, "masante", imaps, server_log)
    wait_port(procs, "masante", submission, server_log)

    if opened := {port for port in SYSTEM_PORTS if _listening(port)} - busy_before:
        raise RuntimeError(f"a private instance listens on a system port {sorted(opened)}: refusing to go on")
    tls = ssl.create_default_context(cafile=str(ca))
    dovecot = imap_bench.Target("127.0.0.1", peer.imaps)
    masante_imap = imap_bench.Target("127.0.0.1", imaps)
    asyncio.run(imap_bench.seed_over_imap(dovecot, tls, args.clients))
    rng = random.Random(smtp_bench.SEED)
    work = [smtp_bench.make_message(i, rng) for i in range(400)]
    letters = [smtp_bench.make_letter(i, rng) for i in range(400)]
    smtp_workloads = (  # (key, label, messages, a new connection per message)
        ("smtp", "SMTP 2 KB-2 MB msg/s", work, False),
        ("letters", "SMTP 4 KB msg/s", letters, False),
        ("reconnect", "SMTP 4 KB, new conn. msg/s", letters, True),
    )
    print(f"setup in {time.monotonic() - t_setup:.0f} s, everything on 127.0.0.1 under {tmp}")
    print(f"  Dovecot {_version(['/usr/sbin/dovecot', '--version'])} (IMAPS :{peer.imaps}, LMTP :{peer.lmtp})")
    print(
        f"  Postfix {_version(['/usr/sbin/postconf', '-d', '-h', 'mail_version'])} "
        f"(:{peer.smtp} STARTTLS, AUTH by Dovecot, LMTP to Dovecot)"
    )
    db = "PostgreSQL" if args.pg else "SQLite"
    print(
        f"  masante {_masante_version()} on {db} (IMAPS :{imaps}, submission :{submission} STARTTLS), "
        f"{args.processes} server process{'es' if args.processes > 1 else ''}"
    )
    print(f"  {hashes.describe()}")
    print(f"  credential cache: Dovecot auth_cache_size=10M auth_cache_ttl={ttl} s; masante TTL {ttl} s")
    print(
        "  durability: Dovecot mail_fsync=optimized, Postfix fsyncs its queue file before 250; "
        f"masante {'synchronous_commit=on' if args.pg else 'SQLite WAL synchronous=FULL'}"
    )
    print(f"  system ports {', '.join(map(str, SYSTEM_PORTS))}: none opened by this benchmark")
    print(
        f"  workloads: bench/imap_bench.py mix ({args.clients} clients, {imap_bench.SEED_MESSAGES} seed messages "
        f"each) and bench/smtp_bench.py submission ({args.clients} connections: 2 KB-2 MB; 4 KB; 4 KB with a "
        f"new connection and AUTH per message), {args.seconds:g} s "
        f"each, {args.runs} runs; TLS everywhere (one throw-away CA)"
    )

    figures: dict[str, list[float]] = {
        f"{k} {side}": [] for k in ("imap", *(w[0] for w in smtp_workloads)) for side in ("peer", "ours")
    }
    logins: dict[str, list[float]] = {"imap peer": [], "imap ours": []}
    submitted = 0
    for run in range(1, args.runs + 1):
        print(f"\nrun {run}/{args.runs}")
        for key_, name, target in (("imap peer", "Dovecot", dovecot), ("imap ours", "masante", masante_imap)):
            result = asyncio.run(imap_bench.run_mix(target, tls, args.clients, args.seconds))
            figures[key_].append(result.ops_per_s)
            logins[key_].extend(result.lat.get("LOGIN", []))
            print(f"  IMAP mix on {name:<16} {result.ops_per_s:8.1f} ops/s ({result.ops} commands)")
            for line in result.table()[1:]:
                print(f"    {line.strip()}")
        print(f"  IMAP ratio masante/Dovecot: {figures['imap ours'][-1] / figures['imap peer'][-1]:.2f}")
        for key, label, messages, reconnect in smtp_workloads:
            for side, name, port in (("peer", "Postfix->Dovecot", peer.smtp), ("ours", "masante", submission)):
                results, elapsed = asyncio.run(
                    smtp_bench.run_clients(
                        smtp_bench.Target("127.0.0.1", port),
                        ca,
                        args.clients,
                        messages,
                        seconds=args.seconds,
                        reconnect=reconnect,
                    )
                )
                rate = len(results) / elapsed
                figures[f"{key} {side}"].append(rate)
                lat = sorted(r.latency * 1000 for r in results)
                mb = sum(r.size for r in results) / 2**20 / elapsed
                print(
                    f"  {label.removesuffix(' msg/s')} on {name:<16} {rate:8.1f} msg/s {mb:6.2f} MB/s "
                    f"({len(results)} messages; end of DATA->250 p50 {statistics.median(lat):.1f} ms, "
                    f"p99 {smtp_bench.percentile(lat, 99):.1f} ms)"
                )
                if side == "peer":
                    submitted += len(results)
                    drained = drain_postfix(peer, submitted)
                    print(f"    Postfix delivered all to Dovecot over LMTP {drained:.1f} s after the last 250")
            ratio = figures[f"{key} ours"][-1] / figures[f"{key} peer"][-1]
            print(f"  {label.removesuffix(' msg/s')} ratio masante/Postfix: {ratio:.2f}")

    print(f"\nsummary over {args.runs} runs (min / median / max), masante on {db}, TLS, durable acknowledgements")
    print(f"  {'workload':<34} {'peer':>26}   {'masante':>26}   {'ratio':>5}")
    rows = (
        ("IMAP mix ops/s (Dovecot)", "imap peer", "imap ours"),
        *((f"{label} (Postfix)", f"{key} peer", f"{key} ours") for key, label, _, _ in smtp_workloads),
    )
    for label, p, o in rows:
        ratio = statistics.median(figures[o]) / statistics.median(figures[p])
        print(f"  {label:<34} {spread(figures[p])}   {spread(figures[o])}   {ratio:5.2f}")
    lp = sorted(x * 1000 for x in logins["imap peer"])
    lo = sorted(x * 1000 for x in logins["imap ours"])
    if lp and lo:
        print(
            f"  {'IMAP LOGIN ms p50 / p99 (p50 ratio)':<34} "
            f"{statistics.median(lp):12.1f} {smtp_bench.percentile(lp, 99):13.1f}   "
            f"{statistics.median(lo):12.1f} {smtp_bench.percentile(lo, 99):13.1f}   "
            f"{statistics.median(lo) / statistics.median(lp):5.2f}"
        )
    inboxes, elsewhere = asyncio.run(smtp_bench._stored(site / "masante.toml"))  # noqa: SLF001
    print(
        f"  masante store: {inboxes} messages in the SMTP recipients' INBOXes and {elsewhere} other copies (IMAP "
        f"seed and APPENDs, vault filings); Postfix delivered {submitted}"
    )


def drain_postfix(peer: Peer, submitted: int, timeout: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if postfix_queue_size(peer.postfix_dir / "queue") == 0 and postfix_delivered(peer.postfix_dir) >= submitted:
            return time.monotonic() - t0
        time.sleep(0.2)
    log = (peer.postfix_dir / "maillog").read_text(errors="replace").splitlines()[-20:]
    raise RuntimeError(
        f"Postfix did not deliver {submitted} messages to Dovecot in {timeout:.0f} s "
        f"({postfix_delivered(peer.postfix_dir)} sent):\n" + "\n".join(log)
    )


def _version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    return out.stdout.split()[0] if out.stdout.strip() else "?"


def _masante_version() -> str:
    import mailserver

    return str(getattr(mailserver, "__version__", "?"))


if __name__ == "__main__":
    main()
