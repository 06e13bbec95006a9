"""``masante-server --processes N``: one supervisor, N server processes on the same ports, on one SQLite file.

The banner is printed once and names the processes; connections are spread over them by the kernel
(``SO_REUSEPORT``); a process that dies is started again; SIGTERM stops them all (exit 0) and a supervisor killed
outright takes its servers with it. Ports chosen by the system (0) are refused: each process would listen
elsewhere. (Two servers sharing the store, and IDLE across them, are ``tests/imap/test_two_processes.py``.)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import support
from tests.test_server_process import Output, clean_env, init_demo

PORTS = ("MX", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB")
BANNER = re.compile(r"2 server processes share these ports \(pids (\d+), (\d+)\)")


@dataclass
class Supervised:
    proc: subprocess.Popen[str]
    out: Output
    err: Output
    ports: dict[str, int]
    ca: Path

    def children(self) -> set[int]:
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[1] == str(self.proc.pid) and fields[0] != "Z":
                found.add(int(stat.parent.name))
        return found


def exited(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def until(predicate: object, what: str, timeout: float = 60) -> None:
    """Until a real process did something (they run on their own time, not the test's clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    cfg = tmp_path / "masante.toml"
    init_demo(cfg)
    ports = {p: support.free_port() for p in PORTS}
    env = clean_env(**{f"MASANTE_PORTS_{p}": str(n) for p, n in ports.items()})
    proc = subprocess.Popen(  # noqa: S603 - our own server
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg), "--processes", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, err = Output(proc), Output(proc, stream="stderr")
    try:
        out.wait_for("stop with Ctrl-C", proc)
        yield Supervised(proc, out, err, ports, tmp_path / "tls" / "ca.pem")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def established(pid: int, port: int) -> int:
    """Connections process ``pid`` holds that were accepted on local ``port`` (``/proc/PID/net/tcp`` and its fds)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        local_port = int(cols[1].split(":")[1], 16)
        if local_port == port and cols[3] == "01" and cols[9] in inodes:  # 01: ESTABLISHED
            count += 1
    return count


def test_the_processes_share_the_ports_and_stop_together(supervised: Supervised) -> None:
    m = BANNER.search(supervised.out.text)
    assert m is not None, supervised.out.text
    pids = {int(m.group(1)), int(m.group(2))}
    assert supervised.children() == pids
    assert supervised.out.text.count("stop with Ctrl-C") == 1  # one banner, not one per process
    tls = ssl.create_default_context(cafile=str(supervised.ca))
    port = supervised.ports["IMAPS"]
    held = []
    try:
        for _ in range(24):
            s = tls.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost")
            assert s.recv(4096).startswith(b"* OK")
            held.append(s)
        per_process = {pid: established(pid, port) for pid in pids}
        assert sum(per_process.values()) == 24
        assert all(n > 0 for n in per_process.values()), per_process  # both took some (24 at 1/2: 2^-23 to fail)
    finally:
        for s in held:
            s.close()
    supervised.proc.send_signal(signal.SIGTERM)
    assert supervised.proc.wait(60) == 0
    assert supervised.out.finish().count("masante-server stopped") == 1
    assert all(exited(pid) for pid in pids)


def test_a_process_that_dies_is_started_again(supervised: Supervised) -> None:
    m = BANNER.search(supervised.out.text)
    assert m is not None
    victim = int(m.group(1))
    os.kill(victim, signal.SIGKILL)
    supervised.err.wait_for("supervisor.process-restarted", supervised.proc)
    until(lambda: len(supervised.children()) == 2 and victim not in supervised.children(), "a new process")
    tls = ssl.create_default_context(cafile=str(supervised.ca))
    for _ in range(6):  # served, whichever process the kernel picks
        with tls.wrap_socket(
            socket.create_connection(("127.0.0.1", supervised.ports["IMAPS"]), timeout=30), server_hostname="localhost"
        ) as s:
            assert s.recv(4096).startswith(b"* OK")
    assert "supervisor.process-died" in supervised.err.text


def test_servers_die_with_a_supervisor_killed_outright(supervised: Supervised) -> None:
    children = supervised.children()
    assert len(children) == 2
    supervised.proc.kill()
    supervised.proc.wait(30)

    def gone() -> bool:
        return all(exited(pid) for pid in children)

    until(gone, "the server processes exit when their supervisor is killed")


def test_ports_chosen_by_the_system_are_refused_with_several_processes(tmp_path: Path) -> None:
    cfg = tmp_path / "masante.toml"
    init_demo(cfg)
    r = subprocess.run(  # noqa: S603 - our own server
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg), "--processes", "3"],
        capture_output=True,
        text=True,
        env=clean_env(MASANTE_PORTS_IMAPS="0"),
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert "server.processes = 3 needs fixed ports: ports.imaps = 0" in r.stderr
    r = subprocess.run(  # noqa: S603 - our own server
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg), "--processes", "0"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert r.returncode == 1 and "server.processes must be 1 or more, got 0" in r.stderr
