"""Fixtures for the SMTP tests: module-scoped servers on both databases, clients, certificates."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto import dkim as dkimlib
from directory.dkim import DkimKeys
from directory.trust import TrustSpace
from mailserver.context import Context
from tests import support
from tests.smtp.harness import Databases, ServerThread, databases

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


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dbs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    yield from databases(request, tmp_path_factory.mktemp(f"smtp-{request.param}"))


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


def start_site(
    tmp: Path,
    db_url: str,
    pki: support.TestPKI,
    signing_record: str,
    unreachable_port: int,
    **sections: dict[str, object],
) -> ServerThread:
    defaults: dict[str, dict[str, object]] = {
        "queue": {"poll_interval": 0.2, "first_retry": 1, "backoff_factor": 1.5},
        "policy": {"rate_professional_per_hour": 0},
    }
    for name, values in sections.items():
        defaults.setdefault(name, {}).update(values)
    cfg = support.make_config(tmp, db_url, pki, **defaults)
    server = ServerThread(cfg).start()
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
