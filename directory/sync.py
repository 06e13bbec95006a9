"""Whitelist synchronisation: the national list downloaded over HTTPS, checked, then imported as ``trust import`` does.

Invariants:
- HTTPS only, the mirror's certificate verified (host name included) against
  ``whitelist.ca_file`` (the system's store if empty), TLS 1.2 at least.
- When the mirror publishes ``<URL>.sha256`` (``sha256sum`` format, or the bare
  digest) the list must match it; a 404 there means "no checksum published";
  any other answer is a refusal (a checksum that cannot be read is not skipped).
- Nothing changes before the whole list is read and checked: a list that is
  not well formed is refused by ``directory.whitelist.read`` as for a file.
- A list that would remove more than ``whitelist.max_removed_share`` of the
  whitelisted domains (10% by default) is refused without ``force``: a list
  cut short but well formed must not empty the trust space quietly.
- The import goes through ``TrustSpace.import_whitelist`` (one transaction,
  the previous state kept for ``trust rollback``); only after it succeeded is
  the list kept as the last good copy, ``<var>/whitelist/<name>``, replaced
  atomically.
- Bounded: at most ``MAX_LIST_SIZE`` octets, ``TIMEOUT`` seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from directory.errors import DirectoryError
from directory.trust import WHITELIST, ImportPlan, TrustSpace
from directory.whitelist import WhitelistError
from mailserver.context import Context

#: the national list is about 2 MB; anything far larger is not it
MAX_LIST_SIZE = 64 * 1024 * 1024
TIMEOUT = 120.0
KEPT_DIR = "whitelist"
_DIGEST = re.compile(r"\A([0-9a-fA-F]{64})(?:\s+\*?(\S.*))?\Z")


class SyncError(DirectoryError):
    """The list was not imported; the message says why (and what to do)."""


@dataclass(frozen=True, slots=True)
class SyncResult:
    url: str
    plan: ImportPlan
    removed_share: float
    checksum_checked: bool
    kept: Path


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def parse_checksum(text: str) -> str:
    """The hex digest of a ``.sha256`` file (first line: ``<hex>`` or ``<hex>  <name>``)."""
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = _DIGEST.match(first)
    if m is None:
        raise SyncError("the checksum file holds no SHA-256 digest")
    return m[1].lower()


class WhitelistSync:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.trust = TrustSpace(ctx)

    @property
    def kept_dir(self) -> Path:
        return self.ctx.config.base_dir / KEPT_DIR

    async def sync(
        self, *, actor: str, url: str | None = None, ca_file: Path | None = None, force: bool = False
    ) -> SyncResult:
        cfg = self.ctx.config.whitelist
        url = url or cfg.url
        if not url:
            raise SyncError("no whitelist URL: give --url or set whitelist.url (MASANTE_WHITELIST_URL)")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise SyncError(f"the whitelist URL must be https://host/...: {url}")
        if ca_file is None and cfg.ca_file:
            ca_file = self.ctx.config.resolve(Path(cfg.ca_file))
        name = os.path.basename(parts.path) or "listeblanchemssante.xml"
        data, expected = await self._download(url, tls_context(ca_file))
        digest = hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            raise SyncError(f"the list does not match its published checksum ({url}.sha256): not imported")
        self.kept_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(dir=self.kept_dir) as tmp:
            downloaded = Path(tmp) / name
            downloaded.write_bytes(data)
            try:
                plan = await self.trust.import_whitelist(downloaded, actor=actor, dry_run=True)
            except WhitelistError as exc:  # not well formed, not a whitelist: refused whole
                raise SyncError(str(exc).replace(str(downloaded), url)) from None
            whitelisted = sum(1 for o in await self.trust.list() if o.source == WHITELIST)
            share = len(plan.removed) / whitelisted if whitelisted else 0.0
            if share > cfg.max_removed_share and not force:
                raise SyncError(
                    f"the downloaded list would remove {len(plan.removed)} of {whitelisted} whitelisted domains "
                    f"({share:.0%}, more than the {cfg.max_removed_share:.0%} allowed by "
                    "whitelist.max_removed_share): not imported; check the list, then use --force to apply it"
                )
            plan = await self.trust.import_whitelist(downloaded, actor=actor)
            kept = self.kept_dir / name
            os.replace(downloaded, kept)  # the last good copy, only once it was imported
        return SyncResult(url, plan, share, expected is not None, kept)

    async def _download(self, url: str, tls: ssl.SSLContext) -> tuple[bytes, str | None]:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                data = await _get(http, url, tls)
                if data is None:
                    raise SyncError(f"{url}: not found (404)")
                checksum = await _get(http, url + ".sha256", tls)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise SyncError(f"{url}: the server's certificate does not verify ({exc.certificate_error})") from None
        except aiohttp.ClientSSLError as exc:
            raise SyncError(f"{url}: TLS failed ({type(exc).__name__})") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SyncError(f"{url}: download failed ({type(exc).__name__}: {exc})") from None
        expected = None
        if checksum is not None:
            try:
                expected = parse_checksum(checksum.decode("ascii"))
            except UnicodeDecodeError:
                raise SyncError(f"{url}.sha256 is not a checksum file") from None
        return data, expected


async def _get(http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext) -> bytes | None:
    """The body at ``url`` (None on 404), at most ``MAX_LIST_SIZE`` octets; other statuses are refusals."""
    async with http.get(url, ssl=tls, allow_redirects=False) as resp:
        if resp.status == 404:
            return None
        if 300 <= resp.status < 400:
            raise SyncError(f"{url}: redirected to {resp.headers.get('Location', '?')}: give that URL if it is trusted")
        if resp.status != 200:
            raise SyncError(f"{url}: the server answered {resp.status} {resp.reason or ''}".rstrip())
        if (resp.content_length or 0) > MAX_LIST_SIZE:
            raise SyncError(f"{url}: {resp.content_length} octets, more than a whitelist ({MAX_LIST_SIZE})")
        chunks, total = [], 0
        async for chunk in resp.content.iter_chunked(64 * 1024):
            total += len(chunk)
            if total > MAX_LIST_SIZE:
                raise SyncError(f"{url}: more than {MAX_LIST_SIZE} octets, more than a whitelist")
            chunks.append(chunk)
        return b"".join(chunks)
