"""A small world on each database: local domains and accounts of every kind, a trust space with another
operator, its patients' domain and a suspended operator."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from directory.accounts import AccountService
from directory.trust import TrustSpace
from mailserver.admission import Admission as Gate
from mailserver.store.models import Account, AccountKind, DomainKind, OperatorStatus
from tests import support

PRO_DOMAIN = support.PRO_DOMAIN  # hopital.test
PATIENT_DOMAIN = support.PATIENT_DOMAIN  # patient.masante.fr
OTHER_OPERATOR = "clinique.mssante.fr"
OTHER_DN = "CN=mx.clinique.mssante.fr,OU=1750000523,O=CLINIQUE,ST=Paris (75),C=FR"
REMOTE_PATIENTS = "patient.mssante.fr"
REMOTE_PATIENTS_DN = "CN=smtps1.ens.example.fr,OU=318003502400041,O=CNAM,ST=Paris (75),C=FR"
SUSPENDED_OPERATOR = "suspendu.mssante.fr"
SUSPENDED_DN = "CN=mx.suspendu.mssante.fr,O=SUSPENDU,C=FR"
OWN_DN = "CN=localhost,O=masante test,C=FR"


@dataclass
class World:
    ctx: support.Context
    gate: Gate
    pro: Account  # PER, médecin
    org: Account  # ORG, a secretariat
    app: Account  # APP, a lab system
    pharmacist: Account  # PER, profession 21
    patient: Account
    other_patient: Account


@pytest.fixture
async def world(ctx: support.Context) -> World:
    svc = AccountService(ctx)
    await support.add_domains(ctx)
    pro = await svc.create(f"dr.house@{PRO_DOMAIN}", AccountKind.PER, actor="t", profession_code="10")
    org = await svc.create(f"secretariat@{PRO_DOMAIN}", AccountKind.ORG, actor="t", profession_code="10")
    app = await svc.create(f"labo@{PRO_DOMAIN}", AccountKind.APP, actor="t")
    pharmacist = await svc.create(f"pharmacie@{PRO_DOMAIN}", AccountKind.PER, actor="t", profession_code="21")
    patient = await svc.create(f"{support.PATIENT_INS}@{PATIENT_DOMAIN}", AccountKind.PATIENT, actor="t")
    other = await svc.create(f"{support.OTHER_INS}@{PATIENT_DOMAIN}", AccountKind.PATIENT, actor="t")
    trust = TrustSpace(ctx)
    await trust.add(PRO_DOMAIN, actor="t", dns=[OWN_DN])
    await trust.add(PATIENT_DOMAIN, actor="t", dns=[OWN_DN])
    await trust.add(OTHER_OPERATOR, actor="t", dns=[OTHER_DN], mta_host="mx.clinique.mssante.fr", mta_port=25)
    await trust.add(REMOTE_PATIENTS, actor="t", dns=[REMOTE_PATIENTS_DN])
    await trust.add(SUSPENDED_OPERATOR, actor="t", dns=[SUSPENDED_DN])
    await trust.set_status(SUSPENDED_OPERATOR, OperatorStatus.SUSPENDED, actor="t")
    return World(ctx, Gate(ctx), pro, org, app, pharmacist, patient, other)


__all__ = ["DomainKind", "World"]
