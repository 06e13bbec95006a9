"""Hypothesis against the readers of hostile input that are not a protocol's grammar: SMTP command parameters,
the XDM/zip reader with METADATA.XML and CDA headers, and the national whitelist importer.

Each raises nothing but its own error, whatever the bytes (issue 14 point 10); ``make fuzz`` runs the same
properties 20 times longer, under coverage. Properties checked beside "no other exception":
- a decoded ``ENVID`` or ``ORCPT`` never holds a control character (a DSN header cannot be split);
- a zip the reader accepts keeps only safe names (no ``..``, no absolute path, no control character), within
  its entry and size bounds;
- a whitelist the importer accepts lists only domains that are syntactically domains.
"""

from __future__ import annotations

import io
import tempfile
import warnings
import zipfile
from pathlib import Path
from xml.etree.ElementTree import ParseError  # noqa: S405 - the exception type only

import pytest
from defusedxml import DefusedXmlException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from directory.whitelist import WhitelistError, read
from mailserver.smtp.params import ParamError, parse_mail_params, parse_rcpt_params, split_path, xtext_decode
from policies import xdm
from tests.fuzzing import examples

SETTINGS = settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- SMTP command parameters (RFC 1870, 3461, 6152, 6531) -----------------------------------------------------

_PARAM_WORDS = [
    "SIZE=",
    "SIZE=1000",
    "SIZE=99999999999999999999",
    "BODY=8BITMIME",
    "BODY=7BIT",
    "BODY=BINARYMIME",
    "SMTPUTF8",
    "RET=FULL",
    "RET=HDRS",
    "ENVID=",
    "ENVID=abc+0D+0AX-Injected:+20yes",
    "ENVID=+",
    "ENVID=+zz",
    "NOTIFY=NEVER",
    "NOTIFY=SUCCESS,FAILURE,DELAY",
    "NOTIFY=NEVER,SUCCESS",
    "ORCPT=rfc822;a+40b.c",
    "ORCPT=rfc822;a+0D+0Ab",
    "ORCPT=utf-8;\\x{41}",
    "ORCPT=",
    "AUTH=<>",
    "=",
    "==",
]
params_like = st.builds(
    " ".join,
    st.lists(st.one_of(st.sampled_from(_PARAM_WORDS), st.text(max_size=10)), max_size=8),
)


@SETTINGS
@given(st.one_of(params_like, st.text(max_size=200)), st.sampled_from([None, 0, 1000, 50 * 2**20]))
def test_mail_and_rcpt_parameters_raise_only_param_error(text: str, limit: int | None) -> None:
    try:
        mail = parse_mail_params(text, size_limit=limit)
    except ParamError:
        pass
    else:
        assert mail.envid is None or all(ord(c) >= 0x20 and c != "\x7f" for c in mail.envid), mail
    try:
        rcpt = parse_rcpt_params(text)
    except ParamError:
        pass
    else:
        assert rcpt.orcpt is None or all(ord(c) >= 0x20 and c != "\x7f" for c in rcpt.orcpt), rcpt


@SETTINGS
@given(st.one_of(st.text(max_size=80), st.builds(lambda a, b: f"<{a}> {b}", st.text(max_size=30), params_like)))
def test_a_path_argument_splits_or_is_refused(arg: str) -> None:
    try:
        path, rest = split_path(arg)
    except ParamError:
        return
    assert isinstance(path, str) and isinstance(rest, str)


@SETTINGS
@given(st.text(alphabet=st.sampled_from("+0123456789ABCDEFabcdefxyz=\r\n "), max_size=40))
def test_xtext_decodes_or_is_refused(text: str) -> None:
    try:
        xtext_decode(text)
    except (ParamError, ValueError):
        pass


# --- the XDM / zip reader ---------------------------------------------------------------------------------------

_NAMES = [
    "IHE_XDM/SUBSET01/METADATA.XML",
    "IHE_XDM/SUBSET01/DOC0001.XML",
    "IHE_XDM/SUBSET01/DOC0002.PDF",
    "IHE_XDM/SUBSET02/METADATA.XML",
    "INDEX.HTM",
    "README.TXT",
    "../evil.sh",
    "/etc/passwd",
    "C:\\x",
    "a/../../b",
    "nested.zip",
    "ihe_xdm/subset01/doc0001.xml",
    "name\x01ctl",
    "",
]
_XML = [
    b'<?xml version="1.0"?>',
    b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
    b'<rim:SubmitObjectsRequest xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">',
    b'<rim:ExtrinsicObject id="d1" mimeType="text/xml">',
    b'<rim:Slot name="URI"><rim:ValueList><rim:Value>DOC0001.XML</rim:Value></rim:ValueList></rim:Slot>',
    b'<rim:Slot name="hash"><rim:ValueList><rim:Value>da39a3ee5e6b4b0d3255bfef95601890afd80709</rim:Value>'
    b"</rim:ValueList></rim:Slot>",
    b'<rim:Slot name="size"><rim:ValueList><rim:Value>0</rim:Value></rim:ValueList></rim:Slot>',
    b'<rim:Slot name="creationTime"><rim:ValueList><rim:Value>20261201093000</rim:Value></rim:ValueList></rim:Slot>',
    b'<rim:Classification classificationScheme="urn:uuid:f0306f51-975f-434e-a61c-c59651d33983" '
    b'nodeRepresentation="11502-2"><rim:Name><rim:LocalizedString value="CR"/></rim:Name></rim:Classification>',
    b'<rim:ExternalIdentifier identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" '
    b'value="1850775056123^^^&amp;1.2.250.1.213.1.4.8&amp;ISO"/>',
    b"</rim:ExtrinsicObject>",
    b"</rim:SubmitObjectsRequest>",
    b"<ClinicalDocument xmlns='urn:hl7-org:v3'><code code='11502-2' displayName='x'/></ClinicalDocument>",
    b"&e;",
    b"<",
    b"\x00\xff",
]
xml_like = st.builds(b"".join, st.lists(st.sampled_from(_XML), max_size=14))
_CONTENT = st.one_of(xml_like, st.binary(max_size=64), st.just(b"PK\x03\x04"))


def _zip(entries: list[tuple[str, bytes]], compress: bool) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():  # duplicate names are part of the hostile input
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
            for name, data in entries:
                if name:
                    z.writestr(name, data)
    return out.getvalue()


zips = st.builds(
    _zip,
    st.lists(st.tuples(st.sampled_from(_NAMES), _CONTENT), max_size=6),
    st.booleans(),
)
small = xdm.Limits(max_entries=4, max_total=4096, max_metadata=2048)


def _mangle(data: bytes, at: int, byte: int) -> bytes:
    if not data:
        return data
    i = at % len(data)
    return data[:i] + bytes([byte]) + data[i + 1 :]


@SETTINGS
@given(
    st.one_of(zips, st.binary(max_size=300), st.builds(_mangle, zips, st.integers(0, 10_000), st.integers(0, 255))),
    st.sampled_from([xdm.DEFAULT_LIMITS, small]),
)
def test_the_zip_and_xdm_reader_raises_only_its_own_errors(data: bytes, limits: xdm.Limits) -> None:
    try:
        archive = xdm.read_zip(data, limits)
    except xdm.UnsafeArchive:
        return
    names = archive.names
    assert len(names) <= limits.max_entries
    for name in names:
        assert ".." not in name.replace("\\", "/").split("/") and not name.startswith(("/", "\\"))
        assert all(ord(c) >= 0x20 for c in name)
    try:
        xdm.read_package(archive, limits)
    except (xdm.PackageError, xdm.UnsafeArchive):
        pass


# the crashes the campaign found (2026-12-02), each a case of its own
def _nameless() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo(""), b"data")
    return out.getvalue()


def _deflated_then_damaged() -> bytes:
    data = _zip([("IHE_XDM/SUBSET01/DOC0001.XML", b"<x>" + b"health data " * 200 + b"</x>")], True)
    start = data.index(b"DOC0001.XML") + len(b"DOC0001.XML")  # the compressed bytes follow the local header
    return data[:start] + bytes(b ^ 0x55 for b in data[start : start + 40]) + data[start + 40 :]


def _needs_version_6_4() -> bytes:
    data = bytearray(_zip([("README.TXT", b"hello")], False))
    central = data.rindex(b"PK\x01\x02")
    data[central + 6 : central + 8] = (64).to_bytes(2, "little")  # "version needed to extract": 6.4
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_nameless(), "no name"),  # IndexError in ZipInfo.is_dir() on an empty name
        (_deflated_then_damaged(), "cannot be read"),  # zlib.error from a damaged deflate stream
        (_needs_version_6_4(), "cannot be read"),  # NotImplementedError from ZipFile() itself
    ],
)
def test_the_crashes_found_are_refusals(data: bytes, reason: str) -> None:
    with pytest.raises(xdm.UnsafeArchive) as refused:
        xdm.read_zip(data)
    assert reason in refused.value.reason, refused.value.reason


@SETTINGS
@given(st.one_of(xml_like, st.binary(max_size=200)))
def test_metadata_and_cda_headers_raise_only_xml_errors(xml: bytes) -> None:
    """``parse_metadata`` says why XML is unreadable with the XML parser's own errors (``read_package`` turns
    them into the refusal naming the package); nothing else may escape."""
    try:
        xdm.parse_metadata(xml)
    except (ParseError, DefusedXmlException, ValueError):
        pass
    try:
        xdm.patient_ids(xml)
    except (ParseError, DefusedXmlException, ValueError, xdm.PackageError):
        pass
    xdm.read_cda(xml)  # None when it is not a CDA header it can read, never an exception


# --- the national whitelist importer --------------------------------------------------------------------------

_WL = [
    b'<?xml version="1.0" encoding="UTF-8"?>',
    b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">',
    b"<DateDeGeneration>2026-11-01T08:00:00Z</DateDeGeneration>",
    b"<DateDeGeneration>not a date</DateDeGeneration>",
    b"<ListeDomaines>",
    b"<Domaine>",
    b"<Nom>ch-synth00000.fr</Nom>",
    b"<Nom>not a domain!</Nom>",
    b"<Nom></Nom>",
    b"<Description>\xc3\x89TABLISSEMENT &amp; associ\xc3\xa9s</Description>",
    b"<DNCertificatOperateur>CN=mta0.operateur0.fr,OU=300000000000000,O=OP,C=FR</DNCertificatOperateur>",
    b"<DNCertificatOperateur>CN=,,=</DNCertificatOperateur>",
    b"<DateMAJ>2024-01-01T10:00:00Z</DateMAJ>",
    b"</Domaine>",
    b"</ListeDomaines>",
    b"</ListeBlancheMSSante>",
    b"<!DOCTYPE l [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>",
    b"&b;",
    b"\xff",
]
whitelist_like = st.builds(b"\n".join, st.lists(st.sampled_from(_WL), max_size=20))


@SETTINGS
@given(st.one_of(whitelist_like, st.binary(max_size=200)))
def test_the_whitelist_importer_raises_only_whitelist_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "listeblanchemssante.xml"
        path.write_bytes(content)
        try:
            listed = read(path)
        except WhitelistError:
            return
    for name in listed.domains:
        assert name and all(c.isalnum() or c in ".-" for c in name) and ".." not in name, name
