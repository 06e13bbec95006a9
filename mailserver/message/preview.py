"""PREVIEW (RFC 8970 §3.1): a short plain-text abstract of a message's text, for IMAP FETCH PREVIEW.

Invariants:
- The text is the first inline ``text/plain`` part (no file name, not an attachment),
  else the first such ``text/html`` part turned into text (tags, scripts and styles
  dropped, entities decoded); nothing else of the message (headers, attachments) is used.
- Whitespace runs become one space, the ends are trimmed, and at most ``MAX_PREVIEW``
  (256) characters are kept, cut between characters; a message without text has "".
- Pure, and the text is not logged: the caller decrypts the message (as FETCH BODY does,
  audited there) and hands the parsed message in.
"""

from __future__ import annotations

from html.parser import HTMLParser

from mailserver.message import mime
from mailserver.message.parsed import ParsedMessage

MAX_PREVIEW = 256
_SKIPPED = frozenset({"script", "style", "head", "title"})


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skipping += 1
        elif tag in ("br", "p", "div", "li", "tr"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


def _inline_text(message: ParsedMessage, subtype: str) -> str | None:
    for _, e in mime.leaves(message.root):
        disp = e.disposition()
        if e.content_type != f"text/{subtype}" or e.filename is not None or (disp and disp[0].lower() == "attachment"):
            continue
        data = message.decoded_body(e)
        try:
            return data.decode(e.charset or "utf-8", "replace")
        except LookupError:
            return data.decode("utf-8", "replace")
    return None


def preview(message: ParsedMessage) -> str:
    """At most 256 characters of the message's text, whitespace folded (RFC 8970 §3.1)."""
    text = _inline_text(message, "plain")
    if text is None:
        html = _inline_text(message, "html")
        text = _html_text(html) if html is not None else ""
    return " ".join(text.split())[:MAX_PREVIEW]
