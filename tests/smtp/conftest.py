"""Fixtures for the SMTP tests: module-wide servers on both databases (``site``), clients, certificates.

A module picks its server's configuration in one line::

    site_server = site_fixture(queue={"first_retry": 3600}, config_on_disk=True)

and its tests ask for ``site``: that server, once the queue has settled (no attempt of an earlier test
in flight). A module that says nothing gets the default site. The server's clock is a ``FakeClock``:
``site.advance(seconds)`` moves it and lets the queue do what became due.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from crypto import dkim as dkimlib
from directory.dkim import DkimKeys
from directory.trust import TrustSpace
from mailserver.clock import Clock, FakeClock
from mailserver.context import Context
from tests import support
from tests.harness.server import Populate, ServerThread, merge, server_fixture, start_server

PRO = f"dr.house@{support.PRO_DOMAIN}"
PRO2 = f"dr.wilson@{support.PRO_DOMAIN}"
PATIENT = f"{support.PATIENT_INS}@{support.PATIENT_DOMAIN}"
#: another operator of the trust space, whose MTA listens nowhere (its mail is retried, then bounced)
OTHER = "clinique.test"
OTHER_DN = "CN=mx.clinique.test,O=Clinique Test,C=FR"
#: an operator the trust space marks as DKIM-signing, with its key in our table
SIGNING = "signing.test"
SIGNING_DN = "CN=mx.signing.test,O=Signing Test,C=FR"
SIGNING_SELECTOR = "sel1"
#: a DN no operator lists
STRANGER_DN = "CN=mx.stranger.test,O=Stranger,C=FR"

#: what every SMTP site runs with, under the module's own sections
SMTP_DEFAULTS: dict[str, dict[str, object]] = {
    "queue": {"poll_interval": 0.2, "first_retry": 1, "backoff_factor": 1.5},
    "policy": {"rate_professional_per_hour": 0},
}


free_port = support.free_port


@pytest.fixture(scope="module")
def signing_key() -> dkimlib.KeyPair:
    return dkimlib.generate_key()


@pytest.fixture(scope="module")
def unreachable_port() -> int:
    return free_port()


async def populate(ctx: Context, signing_record: str, unreachable_port: int) -> None:
    """The usual site: a professional domain, the patient domain, two professionals, a patient,
    and two other operators in the trust space."""
    await support.add_domains(ctx)
    await support.make_pro(ctx)
    await support.make_pro(ctx, "dr.wilson")
    await support.make_patient(ctx)
    trust = TrustSpace(ctx)
    await trust.add(OTHER, actor="test", dns=[OTHER_DN], mta_host="127.0.0.1", mta_port=unreachable_port)
    await trust.add(
        SIGNING, actor="test", dns=[SIGNING_DN], mta_host="127.0.0.1", mta_port=unreachable_port, dkim_signing=True
    )
    await DkimKeys(ctx).add(SIGNING, SIGNING_SELECTOR, signing_record, actor="test")


def usual_site(server: ServerThread, request: pytest.FixtureRequest) -> None:
    """The populate step of every SMTP site (``populate`` above)."""
    signing_key: dkimlib.KeyPair = request.getfixturevalue("signing_key")
    unreachable_port: int = request.getfixturevalue("unreachable_port")
    server.call(populate, signing_key.record, unreachable_port)


def signed(raw: bytes, key: dkimlib.KeyPair) -> bytes:
    """``raw`` DKIM-signed for the signing operator's domain with ``key``."""
    return dkimlib.sign(raw, domain=SIGNING, selector=SIGNING_SELECTOR, private_pem=key.private_pem)


def site_fixture(*more: Populate, config_on_disk: bool = False, clock: Any = FakeClock, **sections: Any) -> Any:
    """The module's ``site_server``: the usual site with ``sections`` over ``SMTP_DEFAULTS``, then ``more``."""
    return server_fixture(
        usual_site, *more, clock=clock, config_on_disk=config_on_disk, **merge(SMTP_DEFAULTS, sections)
    )


#: the default site, for modules that do not configure their own
site_server = site_fixture()


@pytest.fixture
def site(site_server: ServerThread) -> ServerThread:
    """The module's server, once the queue has settled: no earlier test's attempt is still in flight."""
    site_server.settle()
    return site_server


def start_site(
    tmp: Path,
    db_url: str,
    pki: support.TestPKI,
    signing_record: str,
    unreachable_port: int,
    *,
    clock: Clock | None = None,
    **sections: dict[str, object],
) -> ServerThread:
    """A started usual site (the older call shape; ``site_fixture`` is the fixture form).

    On the system clock unless given one, as before the clock was injected: a module built on this may
    still wait for the queue in real time.
    """
    server = start_server(tmp, db_url, pki, sections=merge(SMTP_DEFAULTS, sections), clock=clock)
    try:
        server.call(populate, signing_record, unreachable_port)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def client_certs(pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("client-certs")
    return {dn: pki.issue_client(dn, d) for dn in (OTHER_DN, SIGNING_DN, STRANGER_DN)}
