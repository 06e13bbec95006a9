"""The message model: one ``ParsedMessage`` per message, parsed once at the door and handed down.

Layers above (the SMTP and IMAP front ends, delivery, admission) take a
``ParsedMessage``; none parses a message again. ``mime`` is the one MIME
parser, ``headers`` the header index, ``addresses`` address lists with
groups, ``imap`` the typed ENVELOPE/BODYSTRUCTURE sealed with each message.
"""

from mailserver.message.imap import ImapMeta
from mailserver.message.mime import MAX_DEPTH, MAX_PARTS, MAX_SIZE, MessageError, MessageTooComplex
from mailserver.message.parsed import (
    PARSE_IN_THREAD,
    Attachment,
    ParsedMessage,
    parse_message,
    parse_message_async,
    stored,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "MAX_SIZE",
    "PARSE_IN_THREAD",
    "Attachment",
    "ImapMeta",
    "MessageError",
    "MessageTooComplex",
    "ParsedMessage",
    "parse_message",
    "parse_message_async",
    "stored",
]
