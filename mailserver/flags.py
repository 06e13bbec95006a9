"""Message flags as the store keeps them: system flags and standard keywords plain, the account's keywords sealed.

A keyword is the client's own label on a message (``Diabete``, ``$Label1``): it can be health data, so
``messages.flags`` does not hold it readable.

Invariants:
- Stored flags are unique, sorted, space-separated atoms (``FlagCodec.encode``): an equal set of flags is an
  equal string, so the compare-and-set of STORE compares strings in SQL.
- System flags (``\\Seen``, ``\\Deleted``...) and the registered keywords of ``PLAIN`` stay as they are: SQL
  counts ``\\Seen`` and looks for ``\\Deleted``, the server acts on ``$MDNSent``, and none of them says
  anything of anyone's health.
- Any other keyword is stored as ``%`` followed by the base64url (unpadded) of its fixed seal
  (``MetadataKey.seal_fixed``, kind ``keyword``, bound to the account id). The same keyword of one account
  always seals to the same token, so COPY and MOVE (within the account) copy the column as it is, and two
  messages with the keyword carry equal tokens; another account's token for it differs. ``%`` is no
  atom-char (a list-wildcard, RFC 9051 §9), so no flag a client sends looks like a token.
- Opening is exact: a token opens to the very keyword sealed (case kept), under this account only.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable

from mailserver.store.sealing import MetadataSealer

KEYWORD = "keyword"  # the kind of a keyword's seal
SEALED_MARK = "%"
#: IANA-registered keywords (RFC 3503, RFC 5550, RFC 8457, RFC 9051 §2.3.2) kept plain, compared without case
PLAIN = frozenset(
    k.lower()
    for k in ("$MDNSent", "$Forwarded", "$Junk", "$NotJunk", "$Phishing", "$Important", "$SubmitPending", "$Submitted")
)
_CACHED = 10_000
_PLAIN_SETS: dict[str, frozenset[str]] = {}


def is_plain(flag: str) -> bool:
    """``flag`` is stored as it is (a system flag or a registered keyword)."""
    return flag.startswith("\\") or flag.lower() in PLAIN


def seal_keyword(sealer: MetadataSealer, account_id: int, keyword: str) -> str:
    sealed = sealer.seal_fixed(keyword.encode("utf-8"), kind=KEYWORD, bound_to=str(account_id).encode())
    return SEALED_MARK + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def open_keyword(sealer: MetadataSealer, account_id: int, token: str) -> str:
    raw = base64.urlsafe_b64decode(token[1:] + "=" * (-(len(token) - 1) % 4))
    return sealer.open_fixed(raw, kind=KEYWORD, bound_to=str(account_id).encode()).decode("utf-8")


def _plain_set(stored: str) -> frozenset[str]:
    """Flags without a token as a shared frozenset (a mailbox has few distinct combinations: one copy each)."""
    fs = _PLAIN_SETS.get(stored)
    if fs is None:
        fs = frozenset(stored.split())
        if len(_PLAIN_SETS) < _CACHED:
            _PLAIN_SETS[stored] = fs
    return fs


class FlagCodec:
    """One account's flags, to and from their stored form. Keeps what it sealed and opened (an account has
    few keywords); the sealer is asked for on first need, so a mailbox without keywords never loads it."""

    __slots__ = ("_account_id", "_opened", "_sealer", "_sealer_of", "_tokens")

    def __init__(self, sealer_of: Callable[[], MetadataSealer], account_id: int) -> None:
        self._sealer_of = sealer_of
        self._sealer: MetadataSealer | None = None
        self._account_id = account_id
        self._tokens: dict[str, str] = {}  # keyword -> token
        self._opened: dict[str, frozenset[str]] = {}  # stored flags with tokens -> flags

    def _key(self) -> MetadataSealer:
        if self._sealer is None:
            self._sealer = self._sealer_of()
        return self._sealer

    def _token(self, keyword: str) -> str:
        token = self._tokens.get(keyword)
        if token is None:
            token = seal_keyword(self._key(), self._account_id, keyword)
            if len(self._tokens) < _CACHED:
                self._tokens[keyword] = token
        return token

    def encode(self, flags: Iterable[str]) -> str:
        """Flags as stored: unique, sorted, space-separated, the keywords sealed."""
        return " ".join(sorted({f if is_plain(f) else self._token(f) for f in flags}))

    def decode(self, stored: str) -> frozenset[str]:
        if SEALED_MARK not in stored:
            return _plain_set(stored)
        fs = self._opened.get(stored)
        if fs is None:
            key = self._key()
            out = []
            for f in stored.split():
                if f[0] == SEALED_MARK:
                    keyword = open_keyword(key, self._account_id, f)
                    if len(self._tokens) < _CACHED:
                        self._tokens[keyword] = f  # written again as it was, without sealing again
                    f = keyword
                out.append(f)
            fs = frozenset(out)
            if len(self._opened) < _CACHED:
                self._opened[stored] = fs
        return fs
