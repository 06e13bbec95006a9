"""``masante-server`` with ``server.processes`` > 1: a supervisor and that many server processes on the same ports.

One Python process runs on one core (its event loop and the GIL); Dovecot and Postfix spread their load over
processes. With ``processes = N`` (or ``--processes N``) the command starts N server processes, each a whole
``masante-server`` (every front end, the relay queue, the reminders), and stays as their supervisor. Each binds
the configured ports with ``SO_REUSEPORT``: the kernel spreads new connections over them. They share the store:
on PostgreSQL as several machines would; on SQLite through the file, its writers taking turns at a lock file
beside it (``store.writerlock``), a change in one waking IDLE sessions of the others (``notify``).

Invariants:
- The supervisor opens no database and no listener: it starts the processes, prints the banner once all are
  listening (the first one's, written to a pipe it gave them), and waits for signals.
- SIGTERM or SIGINT to the supervisor stops every process cleanly (SIGTERM each, SIGKILL after
  ``STOP_GRACE`` seconds); it exits 0 once they are gone. A process that cannot start (its error on stderr)
  stops the others and the supervisor exits 1.
- A process that dies while the supervisor is not stopping is started again, at most ``MAX_RESTARTS`` times
  in ``RESTART_WINDOW`` seconds; past that, everything stops with exit status 1 (a crash loop is not hidden).
- A server process dies with its supervisor (Linux: ``PR_SET_PDEATHSIG``), so a supervisor killed with SIGKILL
  does not leave servers holding the ports.
- Ports must be fixed: with port 0 every process would listen somewhere else (``ConfigError``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailserver.config import Config, ConfigError

log = logging.getLogger("masante.supervisor")

#: seconds a server process has to stop after SIGTERM before it is killed
STOP_GRACE = 30.0
#: restarts of crashed processes allowed within ``RESTART_WINDOW`` seconds
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0

_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1


def check_ports(config: Config) -> None:
    """Several processes need ports fixed in the configuration, each the same for all of them."""
    processes = config.server.processes
    if processes < 1:
        raise ConfigError(f"server.processes must be 1 or more, got {processes}")
    if processes == 1:
        return
    chosen = [name for name, port in vars(config.ports).items() if port == 0]
    if chosen:
        raise ConfigError(
            f"server.processes = {processes} needs fixed ports: ports.{', ports.'.join(sorted(chosen))} "
            "= 0 would let each process listen on a port of its own"
        )


def _in_child() -> None:
    """Run in each server process before it executes: signals as normal, and die with the supervisor."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes]
    banner: str = ""


@dataclass
class Supervisor:
    """Starts ``processes`` servers with ``server_args`` (how this command was given its configuration)."""

    processes: int
    server_args: Sequence[str]
    workers: list[Worker] = field(default_factory=list)
    restarts: list[float] = field(default_factory=list)

    def _start(self, index: int) -> Worker:
        read_end, write_end = os.pipe()
        try:
            cmd = [
                sys.executable,
                "-c",
                "from mailserver.app import main; main()",
                *self.server_args,
                "--processes",
                str(self.processes),
                "--ready-fd",
                str(write_end),
            ]
            proc = subprocess.Popen(cmd, pass_fds=(write_end,), preexec_fn=_in_child)  # noqa: S603, PLW1509
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as ready:
            banner = ready.read().decode("utf-8", "replace")  # EOF when it listens (or died trying)
        return Worker(index, proc, banner)

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # taken by sigtimedwait below, never by a handler
        try:
            for i in range(self.processes):
                worker = self._start(i)
                self.workers.append(worker)
                if not worker.banner:
                    return self._stop(1, "a server process could not start")
            print(self._banner(), flush=True)
            log.info(
                "supervisor.started",
                extra={"fields": {"processes": self.processes, "pids": [w.proc.pid for w in self.workers]}},
            )
            while True:
                info = signal.sigtimedwait(_SIGNALS, 3600)
                if info is None or info.si_signo == signal.SIGCHLD:
                    if not self._restart_dead():
                        return self._stop(1, "server processes keep dying")
                    continue
                return self._stop(0, None)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _banner(self) -> str:
        lines = self.workers[0].banner.rstrip("\n").split("\n")
        pids = ", ".join(str(w.proc.pid) for w in self.workers)
        lines.insert(len(lines) - 1, f"  {self.processes} server processes share these ports (pids {pids})")
        return "\n".join(lines)

    def _restart_dead(self) -> bool:
        for n, worker in enumerate(self.workers):
            status = worker.proc.poll()
            if status is None:
                continue
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
            log.error(
                "supervisor.process-died",
                extra={"fields": {"pid": worker.proc.pid, "status": status, "restarts": len(self.restarts)}},
            )
            if len(self.restarts) > MAX_RESTARTS:
                return False
            self.workers[n] = self._start(worker.index)
            if not self.workers[n].banner:
                return False
            log.info("supervisor.process-restarted", extra={"fields": {"pid": self.workers[n].proc.pid}})
        return True

    def _stop(self, status: int, why: str | None) -> int:
        if why is not None:
            print(f"masante-server: {why}; stopping", file=sys.stderr, flush=True)
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for worker in self.workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("supervisor.process-killed", extra={"fields": {"pid": worker.proc.pid}})
                worker.proc.kill()
                worker.proc.wait()
        print("masante-server stopped", flush=True)
        return status
