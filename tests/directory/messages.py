"""Messages as professionals' software sends them: attachments, IHE XDM packages, health headers."""

from __future__ import annotations

import io
import zipfile

from tests.harness.messages import message
from tests.support import make_message

__all__ = ["make_message", "with_attachments", "xdm_zip"]

INS_OID = "1.2.250.1.213.1.4.8"

METADATA = """<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <rim:RegistryObjectList>
    <rim:ExtrinsicObject id="Document01" mimeType="text/xml"
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
      <rim:Slot name="sourcePatientId"><rim:ValueList><rim:Value>IPP-4711^^^&amp;1.2.250.1.999&amp;ISO</rim:Value>
      </rim:ValueList></rim:Slot>
      <rim:ExternalIdentifier id="ei01" registryObject="Document01"
          identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
          value="{doc_patient}^^^&amp;{oid}&amp;ISO^NH">
        <rim:Name><rim:LocalizedString value="XDSDocumentEntry.patientId"/></rim:Name>
      </rim:ExternalIdentifier>
    </rim:ExtrinsicObject>
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


def xdm_zip(patient: str, *, document_patient: str | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    """An IHE_XDM.ZIP (ITI-32 layout) whose METADATA.XML names ``patient`` (an INS)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("README.TXT", "masante test XDM\r\n")
        z.writestr("INDEX.HTM", "<html><body><a href='IHE_XDM/SUBSET01/DOC0001.XML'>CR</a></body></html>")
        metadata = METADATA.format(doc_patient=document_patient or patient, set_patient=patient, oid=INS_OID)
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata)
        z.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<ClinicalDocument xmlns='urn:hl7-org:v3'/>")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def with_attachments(
    sender: str, rcpt: str, subject: str, attachments: list[tuple[str, str, bytes]], **headers: str
) -> bytes:
    """A message with ``(filename, content type, data)`` attachments (``tests.harness.message``)."""
    body = "Bonjour,\nveuillez trouver ci-joint le document.\n"
    return message(sender, rcpt, subject, body, attachments=attachments, crlf_endings=False, **headers)
