"""Messages as professionals' software sends them: attachments, IHE XDM packages, health headers."""

from __future__ import annotations

import hashlib
import io
import zipfile

from tests.harness.messages import message
from tests.support import make_message

__all__ = ["make_message", "with_attachments", "xdm_zip"]

INS_OID = "1.2.250.1.213.1.4.8"

CDA = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b"<ClinicalDocument xmlns='urn:hl7-org:v3'><code code='11502-2'/></ClinicalDocument>\n"
)

#: a document entry of METADATA.XML (ebRIM 3.0, IHE ITI TF-3 §4.2.3.2): codes, author, creation time, URI, hash, size
DOCUMENT_ENTRY = """
    <rim:ExtrinsicObject id="{id}" mimeType="{mime}"
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
      <rim:Slot name="creationTime"><rim:ValueList><rim:Value>{created}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="hash"><rim:ValueList><rim:Value>{sha1}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="size"><rim:ValueList><rim:Value>{size}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="URI"><rim:ValueList><rim:Value>{uri}</rim:Value></rim:ValueList></rim:Slot>
      <rim:Slot name="sourcePatientId"><rim:ValueList><rim:Value>IPP-4711^^^&amp;1.2.250.1.999&amp;ISO</rim:Value>
      </rim:ValueList></rim:Slot>
      <rim:Name><rim:LocalizedString value="{title}"/></rim:Name>
      <rim:Classification classificationScheme="urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
          classifiedObject="{id}" nodeRepresentation="" id="{id}-author">
        <rim:Slot name="authorPerson"><rim:ValueList>
          <rim:Value>810001045367^HOUSE^Gregory^^^Dr^^^&amp;1.2.250.1.71.4.2.1&amp;ISO</rim:Value>
        </rim:ValueList></rim:Slot>
        <rim:Slot name="authorInstitution"><rim:ValueList>
          <rim:Value>Laboratoire Test^^^^^&amp;1.2.250.1.71.4.2.2&amp;ISO^IDNST^^^3123456789</rim:Value>
        </rim:ValueList></rim:Slot>
      </rim:Classification>
      <rim:Classification classificationScheme="urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
          classifiedObject="{id}" nodeRepresentation="{class_code}" id="{id}-class">
        <rim:Slot name="codingScheme"><rim:ValueList><rim:Value>1.2.250.1.213.1.1.4.1</rim:Value></rim:ValueList>
        </rim:Slot>
        <rim:Name><rim:LocalizedString value="{class_name}"/></rim:Name>
      </rim:Classification>
      <rim:Classification classificationScheme="urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
          classifiedObject="{id}" nodeRepresentation="{type_code}" id="{id}-type">
        <rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.6.1</rim:Value></rim:ValueList>
        </rim:Slot>
        <rim:Name><rim:LocalizedString value="{type_name}"/></rim:Name>
      </rim:Classification>
      <rim:Classification classificationScheme="urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
          classifiedObject="{id}" nodeRepresentation="{format_code}" id="{id}-format">
        <rim:Name><rim:LocalizedString value="{format_code}"/></rim:Name>
      </rim:Classification>
      <rim:ExternalIdentifier id="{id}-pid" registryObject="{id}"
          identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
          value="{doc_patient}^^^&amp;{oid}&amp;ISO^NH">
        <rim:Name><rim:LocalizedString value="XDSDocumentEntry.patientId"/></rim:Name>
      </rim:ExternalIdentifier>
    </rim:ExtrinsicObject>"""

METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <rim:RegistryObjectList>{documents}
    <rim:RegistryPackage id="SubmissionSet01">
      <rim:ExternalIdentifier id="ei02" registryObject="SubmissionSet01"
          identificationScheme="urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
          value="{set_patient}^^^&amp;{oid}&amp;ISO^NH">
        <rim:Name><rim:LocalizedString value="XDSSubmissionSet.patientId"/></rim:Name>
      </rim:ExternalIdentifier>
    </rim:RegistryPackage>
  </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>
"""

#: the usual document of a package: a CDA laboratory report (LOINC 11502-2)
LAB_REPORT = {
    "uri": "DOC0001.XML",
    "mime": "text/xml",
    "title": "CR de biologie",
    "class_code": "10",
    "class_name": "Compte rendu",
    "type_code": "11502-2",
    "type_name": "CR d'examens biologiques",
    "format_code": "urn:asip:ci-sis:2010",
    "created": "20261201093000",
}


def document_entry(number: int, data: bytes, patient: str, **fields: str) -> str:
    """One ExtrinsicObject describing ``data`` (``LAB_REPORT`` unless ``fields`` say otherwise)."""
    values = {**LAB_REPORT, **fields}
    return DOCUMENT_ENTRY.format(
        id=f"Document{number:02d}",
        sha1=values.pop("sha1", hashlib.sha1(data).hexdigest()),  # noqa: S324 - XDS names SHA-1
        size=values.pop("size", str(len(data))),
        doc_patient=patient,
        oid=INS_OID,
        **values,
    )


def xdm_zip(
    patient: str,
    *,
    document_patient: str | None = None,
    extra: dict[str, bytes] | None = None,
    documents: list[tuple[bytes, dict[str, str]]] | None = None,
) -> bytes:
    """An IHE_XDM.ZIP (ITI-32 layout) whose METADATA.XML names ``patient`` (an INS). ``documents``: (bytes,
    entry fields over ``LAB_REPORT``, ``uri`` among them); one CDA laboratory report by default."""
    docs = documents if documents is not None else [(CDA, {})]
    entries = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("README.TXT", "masante test XDM\r\n")
        z.writestr("INDEX.HTM", "<html><body><a href='IHE_XDM/SUBSET01/DOC0001.XML'>CR</a></body></html>")
        for i, (data, fields) in enumerate(docs, 1):
            fields = {"uri": f"DOC{i:04d}.XML", **fields}
            entries.append(document_entry(i, data, document_patient or patient, **fields))
            if fields.get("stored", "yes") == "yes":
                z.writestr(f"IHE_XDM/SUBSET01/{fields['uri']}", data)
        metadata = METADATA.format(documents="".join(entries), set_patient=patient, oid=INS_OID)
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def with_attachments(
    sender: str, rcpt: str, subject: str, attachments: list[tuple[str, str, bytes]], **headers: str
) -> bytes:
    """A message with ``(filename, content type, data)`` attachments (``tests.harness.message``)."""
    body = "Bonjour,\nveuillez trouver ci-joint le document.\n"
    return message(sender, rcpt, subject, body, attachments=attachments, crlf_endings=False, **headers)
