"""Mail addresses as this server compares them: ``local@domain``, lower-cased.

Domains compare case-insensitively (RFC 5321 §2.4); this server also treats local
parts case-insensitively, so ``253072A07300443@`` and ``253072a07300443@`` are one patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from directory.errors import InvalidAddress

# RFC 5321 dot-string local part (no quoted strings: no mailbox here needs one)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}\Z")


def is_domain(name: str) -> bool:
    return len(name) <= 253 and bool(_DOMAIN.match(name))


def normalize_domain(name: str) -> str:
    d = name.strip().rstrip(".").lower()
    if not is_domain(d):
        raise InvalidAddress(f"{name!r} is not a domain name")
    return d


@dataclass(frozen=True, slots=True)
class Address:
    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse and normalise ``local@domain`` (angle brackets tolerated); raises InvalidAddress."""
        s = text.strip()
        if s.startswith("<") and s.endswith(">"):
            s = s[1:-1]
        local, sep, domain = s.rpartition("@")
        if not sep or not local or not domain:
            raise InvalidAddress(f"{text!r} is not an address of the form name@domain")
        if len(local) > 64 or not _LOCAL.match(local):
            raise InvalidAddress(f"{text!r} has an invalid local part")
        try:
            d = normalize_domain(domain)
        except InvalidAddress:
            raise InvalidAddress(f"{text!r} has an invalid domain") from None
        return cls(local.lower(), d)


def normalize(text: str) -> str:
    return str(Address.parse(text))
