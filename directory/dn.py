"""Distinguished names of operator certificates, compared as X.500 does rather than as strings.

The whitelist writes ``DNCertificatOperateur`` in RFC 4514 order (most specific
RDN first: ``CN=...,OU=...,O=...,ST=...,C=FR``), as ``crypto.tls.peer_subject_dn``
does; one published entry has spaces after its commas. ``dn_key`` gives the form
both sides are compared in:
- RDNs split on unescaped ``,`` (multi-valued RDNs on ``+``, sorted);
- attribute types upper-case, with the usual aliases folded to one name
  (``S`` = ``ST``, ``E`` = ``EMAILADDRESS``, OIDs of common types to their names);
- values unescaped, surrounding spaces removed, inner runs of spaces collapsed
  and case-folded (X.520 caseIgnoreMatch, as most directory attributes compare).
"""

from __future__ import annotations

import re
from functools import lru_cache

_ALIASES = {
    "S": "ST",
    "E": "EMAILADDRESS",
    "EMAIL": "EMAILADDRESS",
    "2.5.4.3": "CN",
    "2.5.4.5": "SERIALNUMBER",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.97": "ORGANIZATIONIDENTIFIER",
    "1.2.840.113549.1.9.1": "EMAILADDRESS",
    "OID.2.5.4.5": "SERIALNUMBER",
    "OID.2.5.4.97": "ORGANIZATIONIDENTIFIER",
}

_SPACES = re.compile(r"\s+")


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not escaped by a backslash."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1 : i + 3]
            if len(nxt) == 2 and all(c in "0123456789abcdefABCDEF" for c in nxt):
                out.append(chr(int(nxt, 16)))
                i += 3
                continue
            out.append(value[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _escape(value: str) -> str:
    return "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)


@lru_cache(maxsize=8192)
def dn_key(dn: str) -> str:
    """The canonical form of ``dn`` (see the module docstring); two DNs match when their keys are equal."""
    rdns = []
    for rdn in _split(dn.strip(), ","):
        if not rdn.strip():
            continue
        atoms = []
        for atom in _split(rdn, "+"):
            typ, sep, value = atom.partition("=")
            if not sep:
                atoms.append(_escape(_SPACES.sub(" ", _unescape(atom).strip()).casefold()))
                continue
            name = typ.strip().upper()
            name = _ALIASES.get(name, name)
            atoms.append(f"{name}={_escape(_SPACES.sub(' ', _unescape(value).strip()).casefold())}")
        rdns.append("+".join(sorted(atoms)))
    return ",".join(rdns)


def common_name(dn: str) -> str | None:
    """The (first) CN value of ``dn``, unescaped and case-folded (an operator certificate's MTA host name)."""
    for rdn in _split(dn.strip(), ","):
        for atom in _split(rdn, "+"):
            typ, sep, value = atom.partition("=")
            if sep and _ALIASES.get(typ.strip().upper(), typ.strip().upper()) == "CN":
                return _SPACES.sub(" ", _unescape(value).strip()).casefold() or None
    return None
