"""A throw-away server directory for the benchmarks: a fresh CA and server certificate, a KEK,
a configuration with only the listeners asked for, on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from crypto.audit import AuditKey, write_audit_key_file
from crypto.envelope import Kek, write_key_file
from crypto.pki import CertificateAuthority
from mailserver.config import Config, build

LISTENERS = ("mx", "submission", "submissions", "imap", "imaps")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_site(
    tmp: Path, *, listener: str, database_url: str, also: tuple[str, ...] = (), **sections: dict[str, Any]
) -> tuple[Config, int]:
    """Write ``tmp/masante.toml`` (and what it names) with ``listener`` on a free port: (config, port).

    The listeners named in ``also`` get free ports too (read them from ``config.ports``)."""
    ca = CertificateAuthority.create("bench CA")
    ca.write(tmp / "ca.pem", tmp / "ca.key")
    ca.issue("CN=localhost", dns_names=("localhost",), ip_addresses=("127.0.0.1",)).write(
        tmp / "server.pem", tmp / "server.key"
    )
    write_key_file(tmp / "kek.key", Kek.generate())
    write_audit_key_file(tmp / "keys" / "audit.key", AuditKey.generate())
    port = free_port()
    ports = {name: (port if name == listener else free_port() if name in also else -1) for name in LISTENERS}
    data: dict[str, dict[str, Any]] = {
        "server": {"hostname": "localhost", "bind": "127.0.0.1"},
        "ports": ports,
        "database": {"url": database_url},
        "keys": {"kek_file": "kek.key", "dkim_dir": "dkim"},
        "tls": {
            "cert": "server.pem",
            "key": "server.key",
            "ca": "ca.pem",
            "trust_ca": "ca.pem",
            "client_cert": "server.pem",
            "client_key": "server.key",
        },
        # the server's work is measured, not the password hash's
        "security": {"scrypt_log_n": 10},
        # twenty clients log in at once from 127.0.0.1: more attempts in flight than the lockout allows one address
        "limits": {"login_failures_per_source": 10_000, "login_failures_per_account": 10_000},
        "log": {"level": "WARNING"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    cfg = build(data, {}, tmp / "masante.toml")
    (tmp / "masante.toml").write_text(cfg.to_toml())
    return cfg, port


def start_server(cfg: Path, *args: str) -> subprocess.Popen[str]:
    """``masante-server --config cfg *args`` in a subprocess, returned once it says it is ready (its output read
    from then on by a thread, so that its logs never fill the pipe); no ``MASANTE_*`` variable of ours reaches it.
    Exits with the server's last lines if it does not start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASANTE_")}
    proc = subprocess.Popen(  # noqa: S603 - our own server, our own arguments
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if "stop with Ctrl-C" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    proc.kill()
    raise SystemExit("the server did not start:\n" + "".join(seen[-20:]))
