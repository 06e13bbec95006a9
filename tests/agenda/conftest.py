"""Fixtures of the agenda tests: the SMTP tests' site (both databases, a ``FakeClock``), fresh people per test."""

from __future__ import annotations

from tests.smtp.conftest import signing_key, site, unreachable_port

__all__ = ["signing_key", "site", "unreachable_port"]
