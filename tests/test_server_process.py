"""``masante-server`` and ``make run`` as a newcomer meets them: start, say where to connect, stop cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from tests import support

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASANTE_")}
    env.update(extra)
    return env


class Output:
    """Collects a process's stdout in a thread, so that waiting for a line never blocks on a pipe."""

    def __init__(self, proc: subprocess.Popen[str], stream: str = "stdout") -> None:
        self.text = ""
        self._lock = threading.Condition()  # notified at each line, and at the end of the output
        self._ended = False
        pipe = getattr(proc, stream)
        assert pipe is not None, f"the process's {stream} is not a pipe"
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._lock:
                self.text += line
                self._lock.notify_all()
        with self._lock:
            self._ended = True
            self._lock.notify_all()

    def wait_for(self, needle: str, proc: subprocess.Popen[str], timeout: float = 60) -> str:
        with self._lock:  # a line, or the end of the output (the process exited), or the timeout
            self._lock.wait_for(lambda: needle in self.text or self._ended, timeout=timeout)
            if needle in self.text:
                return self.text
        self._thread.join(5)
        pytest.fail(f"{needle!r} not printed (exit {proc.poll()}); got:\n{self.text}")

    def finish(self) -> str:
        self._thread.join(10)
        return self.text


def init_demo(cfg: Path) -> None:
    """The demo the server runs on, set up by ``masante-admin init --demo`` in this process."""
    r = support.run_admin("init", "--demo", config=cfg, env=clean_env())
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_starts_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    cfg = tmp_path / "masante.toml"
    init_demo(cfg)
    ephemeral = {f"MASANTE_PORTS_{p}": "0" for p in ("MX", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB")}
    with subprocess.Popen(
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(**ephemeral),
    ) as proc:
        try:
            output = Output(proc)
            out = output.wait_for("stop with Ctrl-C", proc)
            assert "listening" in out and str(tmp_path / "tls" / "ca.pem") in out
            assert "HTTPS autoconfig" in out  # the demo runs the web service too
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == 0
            assert "masante-server stopped" in output.finish()
        finally:
            if proc.poll() is None:
                proc.kill()


def test_server_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    cfg = tmp_path / "masante.toml"
    cfg.write_text('[database]\nurl = "sqlite:///empty.db"\n')
    r = subprocess.run(
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(MASANTE_KEK="A" * 43 + "="),
    )
    assert r.returncode == 1
    assert "masante-admin db upgrade" in r.stderr and "Traceback" not in r.stderr


def test_server_without_configuration_says_so(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(tmp_path / "absent.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert r.returncode == 1 and "masante-admin init" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_make_run_sets_up_a_demo_and_serves(tmp_path: Path) -> None:
    """``make run`` (here with its data directory and ports moved aside, so it cannot collide with a
    developer's own demo) prints the accounts, the ports and the CA, then serves until SIGINT."""
    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("the suite is not running from the Makefile's virtualenv (run `make test`)")
    cfg = tmp_path / "var" / "masante.toml"
    env = clean_env(
        MASANTE_CONFIG=str(cfg),
        **{f"MASANTE_PORTS_{p}": "0" for p in ("MX", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB")},
    )
    with subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(ROOT), "run", f"VENV={venv}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            output = Output(proc)
            out = output.wait_for("stop with Ctrl-C", proc, timeout=180)
            for expected in (
                "dr.martin@hopital.demo.masante.fr",
                "279035121518989@patient.masante.fr",
                "demo-password",
                "listening",
                str(cfg.parent / "tls" / "ca.pem"),
                "connect to localhost",  # the name in the demo certificate (mbsync and fetchmail check it)
            ):
                assert expected in out
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
            # Ctrl-C reaches make too: it exits 2 or dies of the signal; the server itself stops cleanly
            assert proc.returncode in (0, 2, -signal.SIGINT)
            assert "masante-server stopped" in output.finish()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
