"""``make bench-smtp``: SMTP submission into the encrypted store, under N parallel connections.

Starts ``masante-server`` in a subprocess on a throw-away database (SQLite by
default, ``--pg DSN`` for a fresh database on that PostgreSQL server, dropped at the end) with a fresh PKI, KEK
and accounts in a temporary directory. N clients (default 20) each open one
connection to the submission port, STARTTLS, AUTH PLAIN, then submit messages
of realistic sizes from a shared list until it is empty, pipelining MAIL, RCPT
and DATA (RFC 2920). The mix: half short letters (2-10 KB), a third with a
small PDF (20-200 KB), the rest with large PDFs (0.3-2 MB); recipients are
professionals and patients of the server (every message is delivered, sealed,
into a mailbox before its 250).

Prints messages per second, MB per second, and p50/p99 of the time from the end
of DATA (the final ``.``) to the ``250``; then checks the store holds them all.

    .venv/bin/python bench/smtp_bench.py [--clients 20] [--messages 400] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import os
import random
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.site import start_server  # noqa: E402 - after the checkout is on the path

PASSWORD = "bench-password"  # noqa: S105 - a throw-away account on a throw-away database
DOMAIN = "hopital.bench.test"
PATIENT_DOMAIN = "patient.masante.fr"
PATIENTS = ("279035121518989", "185077505612323")
SENDER = f"dr.bench@{DOMAIN}"
RECIPIENTS = (f"dr.one@{DOMAIN}", f"dr.two@{DOMAIN}", *(f"{ins}@{PATIENT_DOMAIN}" for ins in PATIENTS))
SEED = 20261123


# --- setup ---------------------------------------------------------------------------------------------


def prepare(tmp: Path, pg: str | None) -> tuple[Path, Path, int]:
    """Config, database, PKI and accounts. Returns (config file, CA file, submission port)."""
    from bench.site import write_site

    cfg, port = write_site(
        tmp, listener="submission", database_url=pg or "sqlite:///bench.db", policy={"rate_professional_per_hour": 0}
    )
    asyncio.run(_seed(cfg))
    return tmp / "masante.toml", tmp / "ca.pem", port


async def _seed(cfg: object) -> None:
    from directory.accounts import AccountService
    from mailserver.context import Context
    from mailserver.store import migrate
    from mailserver.store.models import AccountKind, DomainKind

    ctx = Context.open(cfg)  # type: ignore[arg-type]
    try:
        await migrate.upgrade(ctx.db)
        svc = AccountService(ctx)
        await svc.add_domain(DOMAIN, DomainKind.PROFESSIONAL, actor="bench")
        await svc.add_domain(PATIENT_DOMAIN, DomainKind.PATIENT, actor="bench")
        for address in (SENDER, *RECIPIENTS[:2]):
            await svc.create(address, AccountKind.PER, actor="bench", password=PASSWORD)
        for address in RECIPIENTS[2:]:
            await svc.create(address, AccountKind.PATIENT, actor="bench", password=PASSWORD)
    finally:
        await ctx.close()


async def _stored(cfg_file: Path) -> tuple[int, int]:
    """(messages in the recipients' INBOXes, copies filed elsewhere: a patient's vault gets each PDF too)."""
    from sqlalchemy import func, select

    from mailserver.config import load
    from mailserver.context import Context
    from mailserver.store.models import Message

    ctx = Context.open(load(cfg_file))
    try:
        async with ctx.uow(readonly=True) as uow:
            everything = int((await uow.session.execute(select(func.count()).select_from(Message))).scalar_one())
            inboxes = 0
            for rcpt in RECIPIENTS:
                account = await uow.accounts.by_address(rcpt)
                inbox = await uow.mailboxes.get(account.id, "INBOX") if account is not None else None
                if inbox is not None:
                    inboxes += len(await uow.messages.list(inbox.id))
            return inboxes, everything - inboxes
    finally:
        await ctx.close()


# --- messages --------------------------------------------------------------------------------------------


def _pdf(size: int, rng: random.Random) -> bytes:
    """A PDF-shaped blob of ``size`` bytes (compressed streams look random)."""
    head = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\nstream\n"
    tail = b"\nendstream\n%%EOF\n"
    return head + rng.randbytes(max(0, size - len(head) - len(tail))) + tail


def _b64_lines(data: bytes) -> str:
    text = base64.b64encode(data).decode("ascii")
    return "\r\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def make_message(i: int, rng: random.Random) -> tuple[str, bytes]:
    rcpt = RECIPIENTS[i % len(RECIPIENTS)]
    roll = rng.random()
    text = ("Bonjour, voici le compte rendu de la consultation du jour. " * 200)[: rng.randint(1500, 9000)]
    body = "\r\n".join(text[j : j + 72] for j in range(0, len(text), 72))
    head = (
        f"From: Dr Bench <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: bench {i}\r\n"
        f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: <bench{i}.{SEED}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
    )
    if roll < 0.5:
        return rcpt, (head + f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()
    pdf_size = rng.randint(20_000, 200_000) if roll < 0.83 else rng.randint(300_000, 1_500_000)
    boundary = f"=_bench_{i}"
    parts = (
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        f'--{boundary}\r\nContent-Type: application/pdf; name="cr-{i}.pdf"\r\n'
        f'Content-Disposition: attachment; filename="cr-{i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{_b64_lines(_pdf(pdf_size, rng))}\r\n--{boundary}--\r\n"
    )
    return rcpt, (head + parts).encode()


def make_letter(i: int, rng: random.Random) -> tuple[str, bytes]:
    """A 4 KB text letter (the issue's "SMTP 4 KB messages" workload)."""
    rcpt = RECIPIENTS[i % len(RECIPIENTS)]
    head = (
        f"From: Dr Bench <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: lettre {i}\r\n"
        f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: <letter{i}.{SEED}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    text = ("Bonjour, voici le compte rendu de la consultation du jour. " * 80)[: 4096 - len(head) - rng.randint(0, 64)]
    return rcpt, (head + "\r\n".join(text[j : j + 72] for j in range(0, len(text), 72)) + "\r\n").encode()


# --- a minimal pipelining SMTP client --------------------------------------------------------------------


@dataclass
class Result:
    size: int
    latency: float  # end of DATA -> 250


@dataclass(frozen=True)
class Target:
    """A submission server to measure: where it listens (STARTTLS), its TLS name, and the sender's credentials."""

    host: str
    port: int
    server_hostname: str = "localhost"
    sender: str = SENDER
    password: str = PASSWORD


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.sender = SENDER

    async def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = (await self.reader.readline()).decode()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    async def expect(self, code: int) -> str:
        got, text = await self.reply()
        if got != code:
            raise RuntimeError(f"expected {code}, got {text}")
        return text

    @classmethod
    async def open(cls, target: Target, tls: ssl.SSLContext) -> Client:
        reader, writer = await asyncio.open_connection(target.host, target.port)
        c = cls(reader, writer)
        c.sender = target.sender
        await c.expect(220)
        writer.write(b"EHLO bench.test\r\n")
        await c.expect(250)
        writer.write(b"STARTTLS\r\n")
        await c.expect(220)
        await writer.start_tls(tls, server_hostname=target.server_hostname)
        writer.write(b"EHLO bench.test\r\n")
        ehlo = await c.expect(250)
        if "PIPELINING" not in ehlo:
            raise RuntimeError("the server does not offer PIPELINING")
        token = base64.b64encode(f"\0{target.sender}\0{target.password}".encode()).decode()
        writer.write(f"AUTH PLAIN {token}\r\n".encode())
        await c.expect(235)
        return c

    async def send(self, rcpt: str, raw: bytes) -> Result:
        w = self.writer
        w.write(f"MAIL FROM:<{self.sender}> SIZE={len(raw)}\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        await self.expect(250)
        await self.expect(250)
        await self.expect(354)
        w.write(raw.replace(b"\r\n.", b"\r\n.."))
        w.write(b".\r\n")
        await w.drain()
        start = time.perf_counter()
        await self.expect(250)
        return Result(len(raw), time.perf_counter() - start)

    async def close(self) -> None:
        self.writer.write(b"QUIT\r\n")
        try:
            await self.reply()
        finally:
            self.writer.close()


async def run_clients(
    target: Target,
    ca: Path,
    clients: int,
    work: list[tuple[str, bytes]],
    *,
    seconds: float | None = None,
    reconnect: bool = False,
) -> tuple[list[Result], float]:
    """``clients`` connections submit ``work`` once each; with ``seconds``, they cycle over it until then. With
    ``reconnect``, each message has its own connection (TCP, EHLO, STARTTLS, AUTH, QUIT), as a client that sends
    one message and leaves; its latency is still the end of DATA to the ``250``."""
    tls = ssl.create_default_context(cafile=str(ca))
    results: list[Result] = []
    items = iter(work) if seconds is None else itertools.cycle(work)
    start = time.perf_counter()
    until = None if seconds is None else time.monotonic() + seconds

    async def one() -> None:
        c = await Client.open(target, tls)
        try:
            while until is None or time.monotonic() < until:
                item = next(items, None)
                if item is None:
                    return
                if reconnect and results:
                    await c.close()
                    c = await Client.open(target, tls)
                results.append(await c.send(*item))
        finally:
            await c.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return results, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its threads so far (``/proc/PID/stat``), and of its
    children (the server processes of ``--processes N``): what a message costs the server, which a loaded machine
    changes far less than it changes a rate."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="parallel connections (default 20)")
    parser.add_argument("--messages", type=int, default=400, help="messages to submit (default 400)")
    parser.add_argument(
        "--pg", metavar="URL", help="a PostgreSQL server (postgresql://...): a fresh database on it instead of SQLite"
    )
    parser.add_argument("--letters", action="store_true", help="4 KB text letters instead of the 2 KB-2 MB mix")
    parser.add_argument("--reconnect", action="store_true", help="a new connection (STARTTLS, AUTH) per message")
    parser.add_argument("--processes", type=int, default=1, help="server processes sharing the port (default 1)")
    args = parser.parse_args()

    rng = random.Random(SEED)
    work = [(make_letter if args.letters else make_message)(i, rng) for i in range(args.messages)]
    total_mb = sum(len(raw) for _, raw in work) / 2**20
    with tempfile.TemporaryDirectory(prefix="smtp-bench-") as d:
        tmp = Path(d)
        dsn = None
        if args.pg:  # a database of its own, dropped at the end: a second run finds no accounts left by the first
            from tests import support

            dsn = support.new_pg_database(args.pg, "masante_bench")
        try:
            url = support.sqlalchemy_pg_url(dsn).replace("+asyncpg", "") if dsn else None
            stored, filed, results, elapsed, cpu = _measure(tmp, url, args, work)
        finally:
            if dsn is not None:
                support.drop_pg_database(args.pg, dsn)
    _report(args, results, elapsed, cpu, stored, filed, total_mb)


def _measure(
    tmp: Path, url: str | None, args: argparse.Namespace, work: list[tuple[str, bytes]]
) -> tuple[int, int, list[Result], float, float]:
    """Set up, start the server, run the clients, stop it, count what the store holds."""
    cfg, ca, port = prepare(tmp, url)
    server = start_server(cfg, "--processes", str(args.processes))
    try:
        cpu_before = cpu_seconds(server.pid)
        results, elapsed = asyncio.run(
            run_clients(Target("127.0.0.1", port), ca, args.clients, work, reconnect=args.reconnect)
        )
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(30)
    stored, filed = asyncio.run(_stored(cfg))
    return stored, filed, results, elapsed, cpu


def _report(
    args: argparse.Namespace,
    results: list[Result],
    elapsed: float,
    cpu: float,
    stored: int,
    filed: int,
    total_mb: float,
) -> None:
    latencies = [r.latency * 1000 for r in results]
    kind = "4 KB letters" if args.letters else "2 KB to 2 MB, ~half with a PDF"
    print(f"smtp submission: {len(results)} messages ({total_mb:.1f} MB, {kind})")
    how = "a new connection per message" if args.reconnect else "connections reused"
    print(
        f"  {args.clients} connections ({how}), database {'PostgreSQL' if args.pg else 'SQLite'}, TLS 1.3, AUTH PLAIN,"
        f" {args.processes} server process{'es' if args.processes > 1 else ''}"
    )
    print(f"  {len(results) / elapsed:8.1f} messages/s")
    print(f"  {total_mb / elapsed:8.2f} MB/s")
    print(f"  end of DATA -> 250: p50 {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 99):.1f} ms")
    print(f"  server CPU: {cpu * 1000 / len(results):.1f} ms per message ({cpu:.1f} s in all)")
    print(
        f"  elapsed {elapsed:.1f} s; {stored} messages in the INBOXes (sealed), {args.messages} expected;"
        f" {filed} documents filed in patients' vaults"
    )
    if stored != args.messages:
        sys.exit("error: the store does not hold every accepted message")


if __name__ == "__main__":
    main()
