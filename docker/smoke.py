#!/usr/bin/env python3
"""The container deployment, started for real: build, start, submit, read, tear down.

``python3 docker/smoke.py`` (``make docker-smoke``; ``tests/ops/test_docker.py`` in the suite):

1. installs what is missing (Debian's ``docker.io``, ``docker-compose`` v1, ``debootstrap``; root only);
2. uses the Docker daemon that answers, or starts ``dockerd`` in the background and stops it (by its pid)
   at the end;
3. makes the base image ``masante-base:bookworm`` once (``debootstrap --variant=minbase bookworm`` imported
   with ``docker import``: no image registry is needed), kept by its tag for the next runs;
4. builds the stack of ``docker/compose.yaml`` (the server, and PostgreSQL 15 from Debian's packages), with
   the Python dependencies downloaded by the host's pip into ``docker/wheels/`` and the host's extra CA
   certificates in ``docker/ca-certificates/`` (both git-ignored);
5. starts it under its own project name, with generated passwords and ports the system chooses on
   127.0.0.1, and waits for ``/readyz`` on the HTTPS port;
6. submits a professional's message to the patient on submission (587: STARTTLS, AUTH), the patient's answer
   on submissions (465: implicit TLS, AUTH), and reads each in the recipient's INBOX over IMAPS (993), all
   through the published ports and the stack's own CA;
7. takes the stack down with its volumes (``--keep`` leaves it running and prints how to reach it).

Invariants: every wait has a bound (a step that passes it fails with what was seen); what this script
started (the stack, dockerd) is stopped on every way out, SIGTERM included; only the base image and the
built images are kept. Exit status: 0 passed, 1 failed, 77 Docker cannot run here (the reason is the last
line on stderr; the test suite skips on it outside CI). Standard library only.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import imaplib
import os
import secrets
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
BASE_IMAGE = os.environ.get("MASANTE_BASE_IMAGE", "masante-base:bookworm")
DEBIAN_MIRROR = os.environ.get("MASANTE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: the Debian packages that provide each command this script needs
TOOLS = {
    "dockerd": "docker.io",
    "docker": "docker.io",
    "docker-compose": "docker-compose",
    "debootstrap": "debootstrap",
}

# the demo's accounts (admin_cli/provision.py) and the container ports of the demo configuration
PRO = "dr.martin@hopital.demo.masante.fr"
PATIENT = "279035121518989@patient.masante.fr"
PORTS = {"submission": 2587, "submissions": 2465, "imaps": 2993, "web": 2443}
HOST_PORT_VARS = ("MX", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB")

EXIT_UNAVAILABLE = 77


class Unavailable(Exception):
    """Docker cannot run on this machine (not a failure of the deployment)."""


class Failed(Exception):
    """The deployment did not do what it must."""


def log(text: str) -> None:
    print(f"docker-smoke: {text}", flush=True)


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[str]:
    """A command with a bound; its output is captured and shown when it fails."""
    try:
        proc = subprocess.run(  # noqa: S603 - our own fixed commands
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd, stdin=stdin
        )
    except subprocess.TimeoutExpired as exc:
        raise Failed(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-30:]
        raise Failed(f"`{' '.join(cmd)}` exited with {proc.returncode}:\n" + "\n".join(tail))
    return proc


class Steps:
    """How long each step took (printed at the end: the figure for the README)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.done: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t = time.monotonic()
        log(f"{name}...")
        try:
            yield
        finally:
            self.done.append((name, time.monotonic() - t))

    def summary(self) -> str:
        parts = ", ".join(f"{name} {secs:.0f} s" for name, secs in self.done)
        return f"{time.monotonic() - self.start:.0f} s ({parts})"


# --- 1. tools ------------------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"missing {', '.join(missing)} and cannot install them (needs root and apt-get)")
    log(f"installing {' '.join(missing)} from Debian")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], timeout=300, env=env)
    run(["apt-get", "install", "-y", "-qq", *missing], timeout=900, env=env)
    still = [cmd for cmd in TOOLS if shutil.which(cmd) is None]
    if still:
        raise Unavailable(f"installed {', '.join(missing)} but {', '.join(still)} still missing")


# --- 2. the daemon -------------------------------------------------------------------------------------


def daemon_answers() -> bool:
    try:
        proc = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


@contextlib.contextmanager
def docker_daemon(keep: bool, deadline_s: float = 90) -> Iterator[None]:
    """The daemon that answers, or one started here (in its own session) and stopped by its pid afterwards
    (unless ``keep``)."""
    if daemon_answers():
        log("using the Docker daemon that answers")
        yield
        return
    if os.geteuid() != 0:
        raise Unavailable("no Docker daemon answers and starting dockerd needs root")
    log_path = Path(tempfile.gettempdir()) / f"masante-dockerd-{os.getpid()}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603
            [shutil.which("dockerd") or "dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    log(f"started dockerd (pid {proc.pid}, log {log_path})")
    try:
        end = time.monotonic() + deadline_s
        while not daemon_answers():
            try:
                code = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                raise Unavailable(f"dockerd exited with {code}: {_tail(log_path)}")
            if time.monotonic() > end:
                raise Unavailable(f"dockerd did not answer within {deadline_s:.0f} s: {_tail(log_path)}")
        yield
    finally:
        if keep:
            log(f"left dockerd running (pid {proc.pid})")
        else:
            log(f"stopping dockerd (pid {proc.pid})")
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def _tail(path: Path) -> str:
    all_lines = path.read_text(errors="replace").splitlines()
    errors = [line for line in all_lines if "level=error" in line or "failed" in line]
    return (errors or all_lines or ["(empty log)"])[-1]


# --- 3. the base image ---------------------------------------------------------------------------------


def image_exists(tag: str) -> bool:
    return run(["docker", "image", "inspect", tag], timeout=60, check=False).returncode == 0


def ensure_base_image() -> bool:
    """``masante-base:bookworm`` from debootstrap, unless it exists; True when it was made now."""
    if image_exists(BASE_IMAGE):
        log(f"base image {BASE_IMAGE} is there")
        return False
    with tempfile.TemporaryDirectory(prefix="masante-rootfs-", dir="/var/tmp") as tmp:  # noqa: S108 - root's scratch
        rootfs = Path(tmp) / "rootfs"
        log(f"debootstrap --variant=minbase bookworm ({DEBIAN_MIRROR})")
        run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=900)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)  # noqa: S603, S607
        try:
            run(["docker", "import", "-", BASE_IMAGE], timeout=600, stdin=tar.stdout)
        finally:
            assert tar.stdout is not None  # noqa: S101 - Popen with PIPE
            tar.stdout.close()
            if tar.wait(timeout=60) != 0:
                raise Failed("tar of the debootstrap tree failed")
    log(f"base image {BASE_IMAGE} made")
    return True


# --- 4. the build context ------------------------------------------------------------------------------


def requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    return [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]


def build_requirements() -> list[str]:
    """pyproject.toml's build backend (setuptools, wheel): the image builds our own wheel offline too."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["build-system"]["requires"])


def stage_context(python: str) -> None:
    """The host's extra CA certificates and the dependencies' wheels, where docker/Dockerfile looks for them."""
    ca_dir = DOCKER_DIR / "ca-certificates"
    for old in ca_dir.glob("*.crt"):
        old.unlink()
    for crt in Path("/usr/local/share/ca-certificates").glob("**/*.crt"):
        shutil.copyfile(crt, ca_dir / crt.name)
    wheels = DOCKER_DIR / "wheels"
    reqs = [*requirements(), *build_requirements()]
    pip = [python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels)]
    # what an earlier run made is enough when setup.cfg did not change: no index to ask
    if run([*pip, "--no-index", "--find-links", str(wheels), *reqs], timeout=300, check=False).returncode == 0:
        return
    if run([*pip, *reqs], timeout=600, check=False).returncode != 0:
        # no pip here, or no index it can reach: the image asks PyPI itself
        log("pip wheel failed; the image will install its dependencies from PyPI")
        for whl in wheels.glob("*.whl"):
            whl.unlink()


# --- 5. the stack --------------------------------------------------------------------------------------


class Stack:
    def __init__(self, project: str) -> None:
        self.project = project
        self.demo_password = secrets.token_hex(12)
        self.env = dict(os.environ, MASANTE_DB_PASSWORD=secrets.token_hex(16), MASANTE_DEMO_PASSWORD=self.demo_password)
        for name in HOST_PORT_VARS:
            self.env[f"MASANTE_HOST_{name}"] = ""  # a port the system chooses
        if shutil.which("docker-compose"):
            self.cmd = ["docker-compose"]
        else:
            self.cmd = ["docker", "compose"]
        self.cmd += ["--project-name", project, "--file", str(COMPOSE_FILE)]

    def compose(self, *args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.cmd, *args], timeout=timeout, check=check, env=self.env, cwd=ROOT)

    def port(self, container_port: int) -> int:
        out = self.compose("port", "server", str(container_port), timeout=60).stdout.strip()
        host, _, port = out.rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            raise Failed(f"container port {container_port} published as {out!r}, not on 127.0.0.1")
        return int(port)

    def server_state(self) -> str:
        cid = self.compose("ps", "-q", "server", timeout=60).stdout.strip()
        if not cid:
            return "missing"
        return run(["docker", "inspect", "--format", "{{.State.Status}}", cid], timeout=60).stdout.strip()

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", timeout=60, check=False).stdout

    def wait_ready(self, web_port: int, deadline_s: float = 180) -> ssl.SSLContext:
        """The stack's CA (from the server's volume) and a 200 on /readyz through the published HTTPS port."""
        end = time.monotonic() + deadline_s
        seen = "nothing yet"
        while time.monotonic() < end:
            state = self.server_state()
            if state not in ("running", "created", "restarting"):
                raise Failed(f"the server container is {state}:\n{self.logs()}")
            ca = self.compose("exec", "-T", "server", "cat", "tls/ca.pem", timeout=60, check=False)
            if ca.returncode == 0 and "BEGIN CERTIFICATE" in ca.stdout:
                ctx = ssl.create_default_context(cadata=ca.stdout)
                try:
                    with urllib.request.urlopen(  # noqa: S310 - https to our own stack
                        f"https://127.0.0.1:{web_port}/readyz", context=ctx, timeout=10
                    ) as resp:
                        if resp.status == 200:
                            return ctx
                        seen = f"/readyz answered {resp.status}"
                except (urllib.error.URLError, OSError) as exc:
                    seen = f"/readyz: {exc}"
            else:
                seen = "no CA certificate yet (init running)"
            time.sleep(0.5)
        raise Failed(f"not ready within {deadline_s:.0f} s ({seen}):\n{self.logs()}")


# --- 6. mail through the published ports ---------------------------------------------------------------


def message(sender: str, recipient: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, recipient, subject
    msg["Message-ID"] = make_msgid(domain=sender.split("@")[1])
    msg.set_content(body)
    return msg


def submit_starttls(port: int, ctx: ssl.SSLContext, user: str, password: str, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("smoke.test")
        smtp.starttls(context=ctx)
        smtp.ehlo("smoke.test")
        smtp.login(user, password)
        smtp.send_message(msg)


def submit_implicit_tls(port: int, ctx: ssl.SSLContext, user: str, password: str, msg: EmailMessage) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=30, context=ctx) as smtp:
        smtp.ehlo("smoke.test")
        smtp.login(user, password)
        smtp.send_message(msg)


def read_imaps(port: int, ctx: ssl.SSLContext, user: str, password: str, token: str, deadline_s: float = 60) -> bytes:
    """The message whose subject holds ``token`` in ``user``'s INBOX (delivery may be queued: bounded wait)."""
    end = time.monotonic() + deadline_s
    with imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=30) as imap:
        imap.login(user, password)
        while True:
            imap.select("INBOX", readonly=True)
            typ, data = imap.uid("SEARCH", "SUBJECT", token)
            uids = data[0].split() if typ == "OK" and data and data[0] else []
            if uids:
                typ, parts = imap.uid("FETCH", uids[-1].decode(), "(BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple) and isinstance(part[1], bytes):
                        return part[1]
                raise Failed(f"FETCH of {token} in {user}'s INBOX returned {typ} {parts!r}")
            if time.monotonic() > end:
                raise Failed(f"no message {token} in {user}'s INBOX after {deadline_s:.0f} s")
            time.sleep(0.5)


def exchange(stack: Stack, ctx: ssl.SSLContext) -> None:
    ports = {name: stack.port(p) for name, p in PORTS.items()}
    pw = stack.demo_password
    first = secrets.token_hex(6)
    body = f"Bonjour, vos resultats sont disponibles ({first})."
    submit_starttls(ports["submission"], ctx, PRO, pw, message(PRO, PATIENT, f"smoke {first}", body))
    got = read_imaps(ports["imaps"], ctx, PATIENT, pw, first)
    if first.encode() not in got.split(b"\r\n\r\n", 1)[-1]:
        raise Failed("the patient's copy does not hold the body that was submitted")
    log(f"submission :{ports['submission']} (STARTTLS, AUTH) -> IMAPS :{ports['imaps']}: the patient read it")
    answer = secrets.token_hex(6)
    reply = message(PATIENT, PRO, f"Re: smoke {first} {answer}", f"Merci ({answer}).")
    submit_implicit_tls(ports["submissions"], ctx, PATIENT, pw, reply)
    got = read_imaps(ports["imaps"], ctx, PRO, pw, answer)
    if answer.encode() not in got:
        raise Failed("the professional's copy does not hold the patient's answer")
    log(f"submissions :{ports['submissions']} (TLS, AUTH) -> IMAPS: the professional read the answer")


# --- the whole run -------------------------------------------------------------------------------------


def smoke(keep: bool, python: str) -> str:
    steps = Steps()
    with steps.step("tools"):
        ensure_tools()
    with docker_daemon(keep):
        with steps.step("base image and wheels"), ThreadPoolExecutor(max_workers=1) as pool:
            staged = pool.submit(stage_context, python)  # the host's pip meanwhile
            made = ensure_base_image()
            staged.result(timeout=900)
        stack = Stack(f"masantesmoke{os.getpid()}")
        try:
            with steps.step("build"):
                stack.compose("build", "--parallel", timeout=1200)
            with steps.step("up"):
                stack.compose("up", "-d", timeout=300)
            with steps.step("ready"):
                ctx = stack.wait_ready(stack.port(PORTS["web"]))
            with steps.step("mail"):
                exchange(stack, ctx)
        except BaseException:
            if not keep:
                log("stack logs:\n" + stack.logs())
            raise
        finally:
            if keep:
                log(f"left running: `{' '.join(stack.cmd)} ps` (demo password {stack.demo_password})")
            else:
                with steps.step("down"):
                    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)
    return ("from nothing (base image made) " if made else "with the base image cached ") + steps.summary()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="leave the stack running (and dockerd if started)")
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip makes the wheels")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # unwinds through the finally
    try:
        figure = smoke(args.keep, args.python)
    except Unavailable as exc:
        print(f"docker-smoke: Docker cannot run here: {exc}", file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    except Failed as exc:
        print(f"docker-smoke: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    log(f"passed {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
