"""The sans-IO IMAP core: bytes in, typed commands out; typed responses in, bytes out.

No sockets, no asyncio, no storage here (import-linter forbids them, see setup.cfg).

- ``parser``: ``ImapReceiver.feed`` / ``next() -> Command | NeedData | NeedLiteral``.
- ``commands``, ``responses``: frozen values that validate on construction.
- ``states``: the connection state machine (``ALLOWED``, ``TRANSITIONS``,
  ``Connection`` with its BAD counter and the answers to parse errors).
- ``selected``: the selected-mailbox view, its diffing into untagged
  responses, the EXPUNGE hold-back and the announcement of keywords.
- ``names``: LIST/LSUB patterns and the mailbox names CREATE refuses.
- ``capabilities``: what the server announces in each state.
- ``mutf7``: modified UTF-7 mailbox names.

SASL PLAIN is ``mailserver.sasl``, outside this package, so that SMTP shares it.
"""
