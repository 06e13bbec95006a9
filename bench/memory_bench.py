"""``make bench-memory``: the server's memory for large messages, one and then N in parallel.

Starts ``masante-server`` in a subprocess on a throw-away SQLite database (``--pg DSN`` for an
empty PostgreSQL one) with a fresh PKI, KEK and accounts (``bench/site.py``, ``bench/smtp_bench.py``).
A sampler thread reads the server's ``/proc/PID/status`` (VmRSS, every 10 ms) while clients submit
~49 MB messages (a text part and a PDF-like base64 attachment) over submission with STARTTLS and
AUTH PLAIN to a professional of the server: first one message alone, then ``--parallel`` (default 8)
at once (``--parallel 4,8``: a round of 4, then one of 8), each on its own connection. Every message is
delivered, sealed, before its 250.

Prints, per round, the server's RSS before, its peak during the round, and the peak above the
idle figure divided by the messages in flight ("per message"), against the ceiling of the issue
(2x the message size per message in flight). The peak is reset between rounds through
``/proc/PID/clear_refs`` when the kernel allows it (VmHWM), and read from the samples otherwise.

    .venv/bin/python bench/memory_bench.py [--size-mb 49] [--parallel 4,8] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.site import start_server  # noqa: E402 - after the checkout is on the path
from bench.smtp_bench import DOMAIN, RECIPIENTS, SENDER, Client, Target, _b64_lines, _pdf, _seed  # noqa: E402

MB = 1_000_000


def prepare(tmp: Path, pg: str | None, size: int, large: int | None) -> tuple[Path, Path, int]:
    from bench.site import write_site

    limit = size * 2  # the bench's own limits: the message, and room for the headers added on the way
    cfg, port = write_site(
        tmp,
        listener="submission",
        database_url=pg or "sqlite:///bench.db",
        policy={"rate_professional_per_hour": 0},
        # 8 parallel logins of one account are 8 attempts in flight for the login limits (counted before they
        # are checked): room for them, as this measures memory, not the throttle
        limits={"max_message_size": limit, "login_failures_per_account": 100, "login_failures_per_source": 100}
        | ({} if large is None else {"large_message_size": large}),
    )
    asyncio.run(_seed(cfg))
    return tmp / "masante.toml", tmp / "ca.pem", port


def make_message(i: int, size: int, pdf: bytes) -> bytes:
    """A letter with one PDF attachment, ``size`` octets in all (the PDF's base64 fills it)."""
    boundary = f"=_memory_{i}"
    head = (
        f"From: Dr Bench <{SENDER}>\r\nTo: <{RECIPIENTS[0]}>\r\nSubject: memory {i}\r\n"
        f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: <memory{i}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour, voici l'imagerie.\r\n"
        f'--{boundary}\r\nContent-Type: application/pdf; name="irm-{i}.pdf"\r\n'
        f'Content-Disposition: attachment; filename="irm-{i}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    ).encode()
    return head + _b64_lines(pdf).encode() + f"\r\n--{boundary}--\r\n".encode()


class Sampler(threading.Thread):
    """Reads VmRSS of ``pid`` every 10 ms; ``peak`` is the highest since ``reset``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()
        self.hwm_reset = False  # the kernel let us reset VmHWM: it is then exact, samples may miss a spike

    def status(self) -> dict[str, int]:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
        return out

    def rss(self) -> int:
        return self.status()["VmRSS"]

    def reset(self) -> None:
        try:  # "5" resets the peak resident set size (VmHWM), proc(5)
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.peak = self.rss()

    def hwm(self) -> int:
        return max(self.peak, self.status()["VmHWM"]) if self.hwm_reset else self.peak

    def run(self) -> None:
        while not self.stopped.wait(0.01):
            try:
                self.peak = max(self.peak, self.rss())
            except (OSError, KeyError):
                return


async def submit(target: Target, ca: Path, messages: list[bytes]) -> list[float]:
    tls = ssl.create_default_context(cafile=str(ca))

    async def one(raw: bytes) -> float:
        c = await Client.open(target, tls)
        try:
            start = time.perf_counter()
            w = c.writer
            w.write(f"MAIL FROM:<{SENDER}> SIZE={len(raw)}\r\nRCPT TO:<{RECIPIENTS[0]}>\r\nDATA\r\n".encode())
            await c.expect(250)
            await c.expect(250)
            await c.expect(354)
            view = memoryview(raw)  # base64 lines never start with a dot: nothing to stuff
            for i in range(0, len(raw), 1 << 20):
                w.write(view[i : i + (1 << 20)])
                await w.drain()
            w.write(b".\r\n")
            await c.expect(250)
            return time.perf_counter() - start
        finally:
            await c.close()

    return list(await asyncio.gather(*(one(raw) for raw in messages)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=49, help="size of each message in MB (default 49)")
    parser.add_argument(
        "--parallel",
        default="8",
        help="messages in flight in the rounds after the first, comma-separated (default 8; e.g. 4,8)",
    )
    parser.add_argument(
        "--large-message-size", type=int, metavar="OCTETS", help="the server's limits.large_message_size (0: no gate)"
    )
    parser.add_argument("--pg", metavar="URL", help="an empty PostgreSQL database (postgresql://...) instead of SQLite")
    args = parser.parse_args()

    size = int(args.size_mb * MB)
    rng = random.Random(20261202)
    overhead = len(make_message(0, 0, b"")) + 64
    pdf = _pdf((size - overhead) * 76 * 3 // (78 * 4), rng)  # base64: 4 octets per 3, plus CRLF per 76
    rounds = [1, *(int(n) for n in args.parallel.split(","))]
    results: list[tuple[int, int, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as d:
        tmp = Path(d)
        cfg, ca, port = prepare(tmp, args.pg, size, args.large_message_size)
        server = start_server(cfg)
        sampler = Sampler(server.pid)
        try:
            sampler.start()
            target = Target("127.0.0.1", port)
            asyncio.run(submit(target, ca, [make_message(0, 0, b"warm-up")]))  # imports, TLS, first unit of work
            n = 1
            for n in rounds:
                messages = [make_message(n * 100 + i, size, pdf) for i in range(n)]
                time.sleep(0.5)  # let the previous round's memory go back
                before = sampler.rss()
                sampler.reset()
                times = asyncio.run(submit(target, ca, messages))
                results.append((n, before, sampler.hwm(), max(times)))
                del messages
        finally:
            sampler.stopped.set()
            server.terminate()
            server.wait(30)
    msg_mb = size / MB
    print(f"server memory for large messages: {msg_mb:.0f} MB each (a PDF in base64), submission, TLS, AUTH PLAIN")
    print(f"  database {'PostgreSQL' if args.pg else 'SQLite'}; ceiling: 2x the message per message in flight")
    for n, before, peak, seconds in results:
        per = (peak - before) / n / MB
        verdict = "within" if per <= 2 * msg_mb else "ABOVE"
        print(
            f"  {n} in flight: RSS before {before / MB:6.0f} MB, peak {peak / MB:6.0f} MB, "
            f"per message {per:6.0f} MB ({per / msg_mb:.1f}x, {verdict} the ceiling), {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
