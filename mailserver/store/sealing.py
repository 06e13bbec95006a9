"""What the store needs from the key that keeps metadata unreadable at rest (``crypto.metadata.MetadataKey``).

The store does no cryptography itself (it sits below ``crypto`` in the layers); it is handed an object that
digests and seals, set on the ``Database`` by whoever opens it with the configuration (``Context.open``).
"""

from __future__ import annotations

from typing import Protocol


class MetadataSealer(Protocol):
    def digest(self, kind: str, *parts: str) -> bytes: ...

    def seal(self, plaintext: bytes, *, kind: str, bound_to: bytes) -> bytes: ...

    def open(self, sealed: bytes, *, kind: str, bound_to: bytes) -> bytes: ...
